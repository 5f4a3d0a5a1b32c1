#!/usr/bin/env bash
# Call A (session 17): test_kernels_gpu (whole) and test_e2e_gpu's tuning-cache case on the binaries of 60831bb
# (the matmul.cu refactor of the cache path, not run on a GPU before); then gelu_epi (scratch: cuBLASLt's GELU
# epilogues for fc1 forward / fc2 input gradient, what they compute and cost) at batch 32 and 256.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry57/main; D=.devcarry57/data
L=$OUT/logs; mkdir -p $L
.devcarry57/gelu_epi 6304 > $L/gelu_epi_bs32.txt 2>&1; echo "gelu_epi 32 rc=$?"; cat $L/gelu_epi_bs32.txt
.devcarry57/gelu_epi 50432 > $L/gelu_epi_bs256.txt 2>&1; echo "gelu_epi 256 rc=$?"; cat $L/gelu_epi_bs256.txt
echo "($((SECONDS-t0)) s)"
timeout 240 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error" $L/kernels_gpu.txt | head -5
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout 90 $B/test_e2e_gpu --run_test=gemm_tuning_cache_is_written_by_one_run_and_read_by_the_next --log_level=message --report_level=short > $L/e2e_gpu_tuning_cache.txt 2>&1
echo "e2e tuning cache rc=$? ($((SECONDS-t0)) s)"; grep -E "gpu_tuning_.*GEMM|error" $L/e2e_gpu_tuning_cache.txt | cut -c1-300 | head -8; tail -3 $L/e2e_gpu_tuning_cache.txt
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
