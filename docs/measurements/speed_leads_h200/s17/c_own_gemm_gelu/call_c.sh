#!/usr/bin/env bash
# Call C (session 17): gemm_gelu (scratch): our TMA/wgmma GEMM with bias + exact GELU in the epilogue against
# cuBLASLt's BIAS GEMM + a GELU pass, fc1's shape at batch 32 and 256, and fc1's shape at M = 1000.
set -u
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
L=$OUT/logs; mkdir -p $L
for m in 6304 50432; do
  timeout 40 .devcarry59/gemm_gelu $m 3072 768 > $L/gemm_gelu_$m.txt 2>&1; echo "M=$m rc=$?"; cat $L/gemm_gelu_$m.txt
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
