#!/usr/bin/env bash
# Session 18 call A: scratch wgmma attention backward against the product's mma.sync kernel.
set -u
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
for args in "8 197" "4 256" "4 150" "32 197" "256 197"; do
  echo "== $args"; timeout 60 .devcarry61/attn_bwd_wgmma $args; echo "rc=$?"
done 2>&1 | tee $OUT/call_a.txt
