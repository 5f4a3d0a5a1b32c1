#!/usr/bin/env bash
# Calls A and B (session 23): bench_gemm_algos of b1cd89f / its --only and "fwd nobias" follow-up, carried in .devcarry80.
cd .devcarry80 && export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib:/usr/local/cuda/lib64 NCCL_NVLS_ENABLE=0
# call A
timeout 540 ./bench_gemm_algos --batch 256 --reps 20 --search 1 --sustain 200 > $OUT/sustain_bs256.txt 2>&1
# call B
timeout 280 ./bench_gemm_algos --batch 256 --reps 20 --sustain 200 > $OUT/nobias_bs256.txt 2>&1
timeout 250 ./bench_gemm_algos --batch 256 --reps 20 --search 1 --sustain 200 --only fc1 > $OUT/nobias_fc1_search_bs256.txt 2>&1
