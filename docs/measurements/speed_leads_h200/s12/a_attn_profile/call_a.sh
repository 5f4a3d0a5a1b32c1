#!/usr/bin/env bash
# Call A (session 12): ncu's full section set on the short attention backward (attention_short.cu)
# at batch 32 and 256, to see what bounds it (stall reasons, pipe and shared-memory use, occupancy).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
t0=$SECONDS; C=.devcarry34; L=$OUT/logs; mkdir -p $L
NCU=/usr/local/cuda/bin/ncu
for b in 32 256; do
  timeout 200 $NCU --set full --import-source no -k regex:short_attention_backward --launch-skip 3 --launch-count 1 \
     -o $L/attn_bs$b $C/bench_kernels --batch $b --dtype bf16 --eager 1 > $L/ncu_bs$b.out 2>&1
  echo "bs$b rc=$? ($((SECONDS-t0)) s)"; tail -2 $L/ncu_bs$b.out
  $NCU --import $L/attn_bs$b.ncu-rep --page details > $L/details_bs$b.txt 2>&1
  $NCU --import $L/attn_bs$b.ncu-rep --page source --csv --print-source sass > $L/sass_bs$b.csv 2>&1
  $NCU --import $L/attn_bs$b.ncu-rep --page raw --csv > $L/raw_bs$b.csv 2>&1
done
grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|Executed Ipc A" $L/details_bs32.txt | head -20
