#!/usr/bin/env bash
# Call G (session 11): test_e2e_gpu on the binaries of a368656 (plugin.reduce_dtype in GradBuckets; fp32 default).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; C=.devcarry33; D=$C/data; B=$C/rd
mkdir -p $OUT/logs /tmp/e2e
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout 250 $B/test_e2e_gpu --report_level=short > $OUT/logs/e2e_gpu.txt 2>&1
echo "e2e rc=$? ($((SECONDS-t0)) s)"; grep -E "error" $OUT/logs/e2e_gpu.txt | head -6; tail -3 $OUT/logs/e2e_gpu.txt
grep -E "^low_level_zero stage|^gemini offload" $OUT/logs/e2e_gpu.txt
