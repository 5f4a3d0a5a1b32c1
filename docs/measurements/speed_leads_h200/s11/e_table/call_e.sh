#!/usr/bin/env bash
# Call E (session 11): issue 14's table from one command (binaries of 978e7c8: the MLP backward in place,
# the GELU recompute's bias sums in the plain launch shape).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export VIT_GIT_REVISION=978e7c8
B=.devcarry33/new D=.devcarry33/data
mkdir -p $OUT/logs
timeout 520 bash tests/gpu/gpu_machine_checks.sh $B $D speed 2>&1 | tail -45
