#!/usr/bin/env bash
# Call C (session 23): binaries of e4be8f8 (fc1's bias added by the GELU passes, not cuBLASLt's epilogue) and of
# 4ff5093 (old). test_kernels_gpu and test_model_gpu whole (new); bench_kernels at batch 256 (the GELU lines with
# and without the bias); three alternating rounds old / new at batch 32 and 256.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=.devcarry81
tar xJf $C/bins_new.tar.xz -C $C/main && tar xJf $C/bins_old.tar.xz -C $C/old && echo unpacked
t0=$SECONDS; B=$C/main; D=$C/data
L=$OUT/logs; mkdir -p $L
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error|SKIPPED" $L/kernels_gpu.txt | cut -c1-220 | head -8
timeout 120 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | cut -c1-220 | head -5
timeout 60 $B/bench_kernels --batch 256 --dtype bf16 > $L/bench_kernels_bs256.txt 2>&1
echo "bench rc=$? ($((SECONDS-t0)) s)"; grep -E "fc1|gelu" $L/bench_kernels_bs256.txt | cut -c1-160 | head -12
mkdir -p results
for r in 1 2 3; do
  for v in old new; do
    n=${v}_$r; src=$C/main; [ $v = old ] && src=$C/old
    rm -rf $C/b_$v; mkdir -p $C/b_$v; cp $B/vit_results $C/b_$v/; cp $src/vit_hpc $C/b_$v/vit_hpc
    rm -rf results/$n; mkdir -p results/$n; cp $C/tune/gemm_tuning.tsv results/$n/
    BUILD_DIR=$C/b_$v timeout 150 bash run_benchmark.sh --no-build --np 1 --precision bf16 \
      --plugins torch_ddp_fp16 --batch-sizes "32 256" --steps 30 --warmup 5 --name $n > $L/$n.txt 2>&1
    echo "round $r $v rc=$? ($((SECONDS-t0)) s)"; grep -E "^\| throughput" results/$n/summary.md | head -2 | tr '\n' ' '; echo
    grep -E "GPU power" $L/$n.txt | cut -c1-200
    cp results/$n/summary.md $L/$n.md 2>/dev/null
  done
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
