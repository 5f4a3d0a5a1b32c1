#!/usr/bin/env bash
# Call C (session 21): binaries of 945f4f7. The GELU tests and test_model_gpu with VIT_GELU_BWD_DEPTH=2 (the
# recompute_gelu runs must keep the stored run's bits); test_model_gpu and test_e2e_gpu (bitwise reruns) at the
# default; bench_kernels with VIT_GELU_BWD_DEPTH 1 / 2 / 3; three alternating rounds of the step, 1 against 2.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=.devcarry73
tar xJf $C/bins_main.tar.xz -C $C/main && echo unpacked
t0=$SECONDS; B=$C/main; D=$C/data
L=$OUT/logs; mkdir -p $L
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
for bs in 256 32; do
  for d in 1 2 3; do
    [ $bs = 32 ] && [ $d = 3 ] && continue
    VIT_GELU_BWD_DEPTH=$d timeout 60 $B/bench_kernels --batch $bs --dtype bf16 > $L/bench_d${d}_bs$bs.txt 2>&1
    echo "bench depth $d bs$bs rc=$?: $(grep -E '^gelu bwd' $L/bench_d${d}_bs$bs.txt | tr -s ' ' | tr '\n' ';')"
  done
done
VIT_GELU_BWD_DEPTH=2 timeout 60 $B/test_kernels_gpu --run_test='gelu*' --report_level=short > $L/gelu_d2.txt 2>&1
echo "gelu tests, depth 2 rc=$?"; tail -2 $L/gelu_d2.txt | head -1
VIT_GELU_BWD_DEPTH=2 timeout 100 $B/test_model_gpu --report_level=short > $L/model_gpu_d2.txt 2>&1
echo "model_gpu, depth 2 rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu_d2.txt; grep -E "error" $L/model_gpu_d2.txt | cut -c1-220 | head -5
timeout 100 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | cut -c1-220 | head -5
mkdir -p results/tune
for r in 1 2 3; do
  for d in 1 2; do
    n=d${d}_$r
    rm -rf results/$n; mkdir -p results/$n; cp results/tune/gemm_tuning.tsv results/$n/ 2>/dev/null
    VIT_GELU_BWD_DEPTH=$d BUILD_DIR=$B timeout 150 bash run_benchmark.sh --no-build --np 1 --precision bf16 \
      --plugins torch_ddp_fp16 --batch-sizes "32 256" --steps 30 --warmup 5 --name $n > $L/$n.txt 2>&1
    echo "round $r depth $d rc=$? ($((SECONDS-t0)) s)"; grep -E "^\| throughput" results/$n/summary.md | head -2 | tr '\n' ' '; echo
    [ -f results/tune/gemm_tuning.tsv ] || cp results/$n/gemm_tuning.tsv results/tune/ 2>/dev/null
    cp results/$n/summary.md $L/$n.md 2>/dev/null
  done
done
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout $((590-(SECONDS-t0))) $B/test_e2e_gpu --report_level=short > $L/e2e_gpu.txt 2>&1
echo "e2e_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/e2e_gpu.txt; grep -E "error" $L/e2e_gpu.txt | cut -c1-220 | head -5
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
