#!/usr/bin/env bash
# Call F2 (session 24): the GPU suites on d3d825a's binaries (the persistent wgmma attention backward):
# test_kernels_gpu, test_model_gpu and test_e2e_gpu, whole.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=.devcarry84
mkdir -p $C/main && tar xJf $C/bins_new.tar.xz -C $C/main && echo unpacked
t0=$SECONDS; B=$C/main; D=$C/data
L=$OUT/logs; mkdir -p $L
timeout 150 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error" $L/kernels_gpu.txt | cut -c1-220 | head -8
timeout 120 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | cut -c1-220 | head -5
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e \
  timeout 230 $B/test_e2e_gpu --report_level=short --log_level=message > $L/e2e_gpu.txt 2>&1
echo "test_e2e_gpu rc=$? ($((SECONDS-t0)) s)"; tail -4 $L/e2e_gpu.txt; grep -E "error" $L/e2e_gpu.txt | cut -c1-220 | head -8
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
