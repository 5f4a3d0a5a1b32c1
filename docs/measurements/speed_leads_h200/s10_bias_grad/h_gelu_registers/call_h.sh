#!/usr/bin/env bash
# Call H (session 10): the GELU backward with fc1's bias sums, three register/prefetch settings:
# diag = 8bd3422 (kDepth 1, 2 blocks of 512 an SM: 64 registers), a (kDepth 1, 3 blocks: 40 registers, spills),
# b (kDepth 2, 2 blocks: 64 registers, spills in bf16).
set -u
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
mkdir -p $OUT/logs
for b in 32 256; do
  for v in diag gv/a gv/b diag; do
    timeout 100 .devcarry31/$v/bench_kernels --batch $b --dtype bf16 > $OUT/logs/bench_kernels_${v//\//_}_bs$b.txt 2>&1
    echo "$v bs$b rc=$?: $(grep -E '^gelu bwd' $OUT/logs/bench_kernels_${v//\//_}_bs$b.txt | cut -c1-75 | tr '\n' '|')"
  done
done
