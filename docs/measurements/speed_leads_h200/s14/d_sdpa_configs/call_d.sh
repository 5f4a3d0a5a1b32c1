#!/usr/bin/env bash
# Call D (session 14, branch sdpa-configs): cuDNN's engine configurations for the SDPA forward, each timed by
# bench_kernels (attention fwd line) at batch 32 and 256.
set -u
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
t0=$SECONDS; L=$OUT/logs; mkdir -p $L
for bs in 32 256; do
  VIT_SDPA_LIST=1 timeout 90 .devcarry52/bench_kernels --batch $bs --dtype bf16 > $L/list_bs$bs.txt 2>&1
  echo "bs $bs list rc=$? ($((SECONDS-t0)) s)"; grep -E "SDPA heuristics|configuration" $L/list_bs$bs.txt | head -30
  grep -E "^attention fwd" $L/list_bs$bs.txt
  for k in 1 2 0; do
    VIT_SDPA_FWD_CONFIG=$k timeout 90 .devcarry52/bench_kernels --batch $bs --dtype bf16 > $L/k${k}_bs$bs.txt 2>&1
    echo "bs $bs k=$k rc=$? ($((SECONDS-t0)) s): $(grep -E '^attention (fwd|cudnn|cublas)|FAILED' $L/k${k}_bs$bs.txt | head -3 | tr '\n' '|')"
    [ $((SECONDS-t0)) -gt 380 ] && break
  done
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
