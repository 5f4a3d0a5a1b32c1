#!/usr/bin/env bash
# Call H (session 16): test_model_gpu and test_e2e_gpu on the binaries of ea7bc4d (the wide GEMM tuning and the
# tuning cache on by default; test_e2e_gpu's new gemm_tuning_cache_is_written_by_one_run_and_read_by_the_next).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry54/main; D=.devcarry54/data
L=$OUT/logs; mkdir -p $L
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout 60 $B/test_e2e_gpu --run_test=gemm_tuning_cache_is_written_by_one_run_and_read_by_the_next --log_level=message --report_level=short > $L/e2e_gpu_tuning_cache.txt 2>&1
echo "e2e tuning cache rc=$? ($((SECONDS-t0)) s)"; grep -E "gpu_tuning_.*GEMM|error" $L/e2e_gpu_tuning_cache.txt | cut -c1-300 | head -8; tail -3 $L/e2e_gpu_tuning_cache.txt
timeout 150 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | head -5
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout $((540-(SECONDS-t0))) $B/test_e2e_gpu --report_level=short > $L/e2e_gpu.txt 2>&1
echo "e2e_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/e2e_gpu.txt; grep -E "error" $L/e2e_gpu.txt | head -5
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
