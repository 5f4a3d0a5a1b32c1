#!/usr/bin/env bash
# Session 18 call C: scratch wgmma attention backward variants (base, no exp, staged loads, pipelined, both)
# against the product's mma.sync kernel, T = 197, batch 32 and 256, with per-warpgroup clock marks.
set -u
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
for v in w_tma w_tma_pipe w_pipe w_base; do
  for args in "8 197" "32 197" "256 197"; do
    echo "== $v $args"; timeout 60 .devcarry61/$v $args; echo "rc=$?"
  done
done 2>&1 | tee $OUT/call_c.txt
