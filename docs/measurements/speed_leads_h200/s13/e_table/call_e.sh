#!/usr/bin/env bash
# Call E (session 13): issue 14's comparison on the binaries of 3f1c368 within the device time left: vit_hpc
# default and recompute_gelu (op profile) beside PyTorch eager / torch.compile, batch 32 and 256, one call.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export VIT_GIT_REVISION=3f1c368
mkdir -p $OUT/logs
BUILD_DIR=.devcarry43/new bash run_benchmark.sh --no-build --np 1 --precision bf16 \
  --plugins "torch_ddp_fp16 torch_ddp_fp16+recompute_gelu" --batch-sizes "32 256" --steps 30 --warmup 5 \
  --profile --with-pytorch --name speed_np1 > $OUT/logs/speed_np1.txt 2>&1
echo "rc=$?"; cp results/speed_np1/summary.md $OUT/logs/speed_np1.md 2>/dev/null
grep -E "throughput|pytorch_" $OUT/logs/speed_np1.txt | head -20
