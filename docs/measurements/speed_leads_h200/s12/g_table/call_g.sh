#!/usr/bin/env bash
# Call G (session 12): first, test_kernels_gpu's deferred_folds_give_the_immediate_bits on a deliberately
# broken build (the batched fold kernel adds every record with 32 rows of threads, so the LayerNorm folds
# lose their 8-row order): it must fail. Then issue 14's table from one command on the binaries of 399f233
# (deferred folds, dO read once by the short attention backward).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export VIT_GIT_REVISION=399f233
B=.devcarry37/new D=.devcarry33/data
mkdir -p $OUT/logs
timeout 60 .devcarry37/broken/test_kernels_gpu --run_test=deferred_folds_give_the_immediate_bits --report_level=short > $OUT/logs/broken_folds.txt 2>&1
echo "broken build: rc=$? (non-zero expected)"; grep -E "error|passed|failed" $OUT/logs/broken_folds.txt | head -8
timeout 520 bash tests/gpu/gpu_machine_checks.sh $B $D speed 2>&1 | tail -45
