#!/usr/bin/env bash
# Call G (session 24): bench_kernels of the commit after eff8264 (--attention-tokens), carried in .devcarry86/:
# the attention forward and backward at 128, 129, 192, 197, 208 and 224 tokens, batch 256 and 32. 197 runs the
# wgmma backward as 4 key tiles of 64 (the fourth with 5 real keys), 192 as 3: is the fourth tile's work what
# its time costs (tensor work shared by the two warpgroups), or does the per-warpgroup chain bound it?
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib:/usr/local/cuda/lib64
export NCCL_NVLS_ENABLE=0
for bs in 256 32; do
  timeout 100 .devcarry86/bench_kernels --batch $bs --dtype bf16 --attention-tokens "128 129 192 197 208 224" \
    > $OUT/lengths_bs$bs.txt 2>&1
  echo "bs $bs rc=$?"; cut -c14-140 $OUT/lengths_bs$bs.txt
done
