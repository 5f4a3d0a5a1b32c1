#!/usr/bin/env bash
# Call B (session 15): the LayerNorm register-kernel bits test on a build broken on purpose (the forward's mean
# as sum * (1/C) instead of sum / C; must fail), and bench_gemm_algos --search at batch 32 and 256 (tiles,
# cluster shapes and swizzling around the heuristic's answers, and every id the library lists).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
t0=$SECONDS; B=.devcarry51/main; X=.devcarry51/broken
L=$OUT/logs; mkdir -p $L
timeout 60 $X/test_kernels_gpu --run_test=layernorm_forward_rows_in_registers_give_the_same_bits --report_level=short > $L/kernels_gpu_broken.txt 2>&1
echo "broken LN bits test rc=$? (must be non-zero) ($((SECONDS-t0)) s)"; grep -E "error|passed|failed" $L/kernels_gpu_broken.txt | head -6 | cut -c1-300
timeout 60 $B/test_kernels_gpu --run_test=layernorm_forward_rows_in_registers_give_the_same_bits --report_level=short > $L/kernels_gpu_ln_main.txt 2>&1
echo "main LN bits test rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu_ln_main.txt
timeout 240 $B/bench_gemm_algos --batch 32 --reps 20 --search 1 > $L/gemm_search_bs32.txt 2>&1
echo "search bs32 rc=$? ($((SECONDS-t0)) s)"; grep -E "search" $L/gemm_search_bs32.txt | cut -c1-400
timeout $((560-(SECONDS-t0))) $B/bench_gemm_algos --batch 256 --reps 10 --search 1 > $L/gemm_search_bs256.txt 2>&1
echo "search bs256 rc=$? ($((SECONDS-t0)) s)"; grep -E "search" $L/gemm_search_bs256.txt | cut -c1-400
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
