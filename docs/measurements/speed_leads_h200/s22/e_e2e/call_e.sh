#!/usr/bin/env bash
# Call E (session 22): binaries of 4ff5093. test_e2e_gpu whole (the benchmark's power meter among its cases;
# the other cases: no regression from the trainer's change, bitwise reruns included).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=.devcarry79
tar xJf $C/bins_main.tar.xz -C $C/main && echo unpacked
t0=$SECONDS; B=$C/main; D=$C/data
L=$OUT/logs; mkdir -p $L
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e \
  timeout 200 $B/test_e2e_gpu --report_level=short --log_level=message > $L/e2e_gpu.txt 2>&1
echo "test_e2e_gpu rc=$? ($((SECONDS-t0)) s)"; tail -4 $L/e2e_gpu.txt; grep -E "error|power " $L/e2e_gpu.txt | cut -c1-220 | head -8
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
