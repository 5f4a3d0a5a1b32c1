#!/usr/bin/env bash
# Call B (session 20): the wgmma attention backward with its loads in groups (binaries of 653ae88, .devcarry69/main)
# against session 19's (80be387, .devcarry68/old) and call A's (07e6e08, .devcarry68/main): test_kernels_gpu and
# test_model_gpu whole (653ae88), bench_kernels' attention lines at batch 32 / 256 (all three), then vit_hpc bf16
# default at batch 32 and 256, 80be387 and 653ae88 alternating, three rounds (one GEMM tuning cache for all).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tar xJf .devcarry68/bins.tar.xz -C .devcarry68 && tar xJf .devcarry69/bins.tar.xz -C .devcarry69 && echo unpacked
t0=$SECONDS; B=.devcarry69/main
L=$OUT/logs; mkdir -p $L
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error|SKIPPED" $L/kernels_gpu.txt | cut -c1-220 | head -8
timeout 100 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | cut -c1-220 | head -5
for b in 32 256; do
  for v in 68/old 68/main 69/main; do
    n=$(echo $v | tr / _)
    timeout 60 .devcarry$v/bench_kernels --batch $b --dtype bf16 > $L/bench_kernels_${n}_bs$b.txt 2>&1
    echo "bench $v bs$b rc=$?"; grep -E "attention bwd cudnn( \+db|  )|step estimate, cudnn" $L/bench_kernels_${n}_bs$b.txt | head -3
  done
done
echo "($((SECONDS-t0)) s)"
mkdir -p results/tune
for r in 1 2 3; do
  for v in 68/old 69/main; do
    n=$(echo $v | tr / _)_$r
    rm -rf results/$n; mkdir -p results/$n; cp results/tune/gemm_tuning.tsv results/$n/ 2>/dev/null
    BUILD_DIR=.devcarry$v timeout 150 bash run_benchmark.sh --no-build --np 1 --precision bf16 \
      --plugins torch_ddp_fp16 --batch-sizes "32 256" --steps 30 --warmup 5 --name $n > $L/$n.txt 2>&1
    echo "round $r $v rc=$? ($((SECONDS-t0)) s)"; grep -E "^\| throughput" results/$n/summary.md | head -2 | tr '\n' ' '; echo
    [ -f results/tune/gemm_tuning.tsv ] || cp results/$n/gemm_tuning.tsv results/tune/ 2>/dev/null
    cp results/$n/summary.md $L/$n.md 2>/dev/null
  done
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
