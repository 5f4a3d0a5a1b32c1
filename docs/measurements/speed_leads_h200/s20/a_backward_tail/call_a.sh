#!/usr/bin/env bash
# Call A (session 20): the wgmma attention backward whose last query tile runs over its first NL*16 queries
# (binaries of 07e6e08, "main") against the same binaries relinked with session 19's attention_sm90a.cu
# (80be387, "old"): test_kernels_gpu whole (new), bench_kernels' attention lines at batch 32 / 256 (both),
# then vit_hpc bf16 default at batch 32 and 256, old and new alternating, three rounds (the first tunes the
# GEMMs, the others read its cache).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tar xJf .devcarry68/bins.tar.xz -C .devcarry68 && echo unpacked
t0=$SECONDS; B=.devcarry68/main; O=.devcarry68/old
L=$OUT/logs; mkdir -p $L
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error|SKIPPED" $L/kernels_gpu.txt | cut -c1-220 | head -8
for b in 32 256; do
  for v in old main; do
    timeout 60 .devcarry68/$v/bench_kernels --batch $b --dtype bf16 > $L/bench_kernels_${v}_bs$b.txt 2>&1
    echo "bench $v bs$b rc=$?"; grep -E "attention (fwd|bwd) cudnn|step estimate, cudnn" $L/bench_kernels_${v}_bs$b.txt | head -5
  done
done
echo "($((SECONDS-t0)) s)"
mkdir -p results/tune
for r in 1 2 3; do
  for v in old main; do
    rm -rf results/${v}_$r; mkdir -p results/${v}_$r; cp results/tune/gemm_tuning.tsv results/${v}_$r/ 2>/dev/null
    BUILD_DIR=.devcarry68/$v timeout 150 bash run_benchmark.sh --no-build --np 1 --precision bf16 \
      --plugins torch_ddp_fp16 --batch-sizes "32 256" --steps 30 --warmup 5 --name ${v}_$r > $L/${v}_$r.txt 2>&1
    echo "round $r $v rc=$? ($((SECONDS-t0)) s)"; grep -E "^\| throughput" $L/${v}_$r.txt | head -1
    [ -f results/tune/gemm_tuning.tsv ] || cp results/${v}_$r/gemm_tuning.tsv results/tune/ 2>/dev/null
    cp results/${v}_$r/summary.md $L/${v}_$r.md 2>/dev/null
  done
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
