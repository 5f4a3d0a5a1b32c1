#!/usr/bin/env bash
# Call E: issue 14's table from one command (binaries of d5dcf27), then test_e2e_gpu with the 5e-3 gemini bound.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry30/gelu D=.devcarry30/data
mkdir -p $OUT/logs
bash tests/gpu/gpu_machine_checks.sh $B $D speed 2>&1 | tail -40
echo "speed stage ($((SECONDS-t0)) s)"
mkdir -p /tmp/e2e; env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout 200 $B/test_e2e_gpu --report_level=short > $OUT/logs/e2e_gpu.txt 2>&1
echo "e2e rc=$? ($((SECONDS-t0)) s)"; grep -E "error" $OUT/logs/e2e_gpu.txt | head -6; tail -3 $OUT/logs/e2e_gpu.txt
grep -E "^low_level_zero stage|^gemini offload" $OUT/logs/e2e_gpu.txt
