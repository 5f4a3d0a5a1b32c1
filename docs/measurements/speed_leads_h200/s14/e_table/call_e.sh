#!/usr/bin/env bash
# Call E (session 14): issue 14's table on the binaries of 98b6a10 (the README's command).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rm -rf results/speed_np1
export VIT_GIT_REVISION=98b6a10
timeout 560 bash tests/gpu/gpu_machine_checks.sh .devcarry53/new .devcarry50/data speed
ls $OUT
