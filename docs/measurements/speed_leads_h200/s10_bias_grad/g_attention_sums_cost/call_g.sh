#!/usr/bin/env bash
# Call G (session 10): the cost of the QKV bias sums inside the short attention backward (bench_kernels of 8bd3422:
# "attention bwd cudnn" without and "+db of qkv" with them), batch 32 and 256.
set -u
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
mkdir -p $OUT/logs
for b in 32 256; do
  timeout 100 .devcarry31/diag/bench_kernels --batch $b --dtype bf16 > $OUT/logs/bench_kernels_bs$b.txt 2>&1
  echo "bs$b rc=$?"; grep -E "attention bwd|column sum|gelu bwd" $OUT/logs/bench_kernels_bs$b.txt | cut -c1-100
done
