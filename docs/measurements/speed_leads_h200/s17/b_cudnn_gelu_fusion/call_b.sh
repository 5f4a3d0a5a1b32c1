#!/usr/bin/env bash
# Call B (session 17): cudnn_mm (scratch): cuDNN's fused matmul graphs with the exact GELU (forward, and the
# GELU backward on fc2's input gradient) against its plain matmul graphs, ViT-B/16 shapes, batch 32 and 256.
set -u
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
t0=$SECONDS; L=$OUT/logs; mkdir -p $L
timeout 120 .devcarry58/cudnn_mm 6304 exact > $L/cudnn_mm_exact.txt 2>&1; echo "exact rc=$? ($((SECONDS-t0)) s)"; cat $L/cudnn_mm_exact.txt
timeout 200 .devcarry58/cudnn_mm 6304 > $L/cudnn_mm_bs32.txt 2>&1; echo "bs32 rc=$? ($((SECONDS-t0)) s)"; cat $L/cudnn_mm_bs32.txt
timeout 240 .devcarry58/cudnn_mm 50432 > $L/cudnn_mm_bs256.txt 2>&1; echo "bs256 rc=$? ($((SECONDS-t0)) s)"; cat $L/cudnn_mm_bs256.txt
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
