#!/usr/bin/env bash
# Call J (session 12): the kernel and end-to-end GPU suites on the binaries of the session's last code
# (763b4b0: deferred folds with the review's changes, dO once, train.recompute_norm).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry38/new; D=.devcarry33/data
mkdir -p $OUT/logs
timeout 150 $B/test_kernels_gpu --report_level=short > $OUT/logs/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $OUT/logs/kernels_gpu.txt; grep -E "error" $OUT/logs/kernels_gpu.txt | head -5
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout 280 $B/test_e2e_gpu --report_level=short > $OUT/logs/e2e_gpu.txt 2>&1
echo "e2e_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $OUT/logs/e2e_gpu.txt; grep -E "error" $OUT/logs/e2e_gpu.txt | head -5
