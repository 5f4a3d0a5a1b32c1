#!/usr/bin/env bash
# Call B (session 19): the wgmma attention forward with K + Q's first tile on their own mbarrier (binaries of
# 13490e5): test_kernels_gpu whole, bench_kernels' attention lines at batch 32 / 256, test_model_gpu and
# test_e2e_gpu whole (bitwise reproducibility of a fixed-seed run included).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tar xJf .devcarry66/bins.tar.xz -C .devcarry66 && echo unpacked
t0=$SECONDS; B=.devcarry66/main; D=.devcarry66/data
L=$OUT/logs; mkdir -p $L
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error|SKIPPED" $L/kernels_gpu.txt | cut -c1-220 | head -8
grep -E "attention_fwd (out|stats) (wgmma|cudnn)" $L/kernels_gpu.txt | head -70
for b in 32 256; do
  timeout 60 $B/bench_kernels --batch $b --dtype bf16 > $L/bench_kernels_bs$b.txt 2>&1
  echo "bench bs$b rc=$?"; grep -E "attention (fwd|bwd cudnn)" $L/bench_kernels_bs$b.txt | head -3
done
timeout 120 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | head -5
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout $((560-(SECONDS-t0))) $B/test_e2e_gpu --report_level=short > $L/e2e_gpu.txt 2>&1
echo "e2e_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/e2e_gpu.txt; grep -E "error" $L/e2e_gpu.txt | head -5
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
