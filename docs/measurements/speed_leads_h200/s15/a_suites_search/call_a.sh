#!/usr/bin/env bash
# Call A (session 15): main's GPU suites on the binaries of 4cdd6a5 (not run on a GPU since edd06a7), the
# LayerNorm register-kernel bits test on a build broken on purpose (must fail), and bench_gemm_algos --search
# at batch 32 and 256 (every cuBLASLt configuration against the heuristic's list).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry51/main; X=.devcarry51/broken; D=.devcarry51/data
L=$OUT/logs; mkdir -p $L
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv > $L/gpu.txt 2>&1
timeout 60 $X/test_kernels_gpu --run_test='*/layernorm_forward_rows_in_registers_give_the_same_bits' --report_level=short > $L/kernels_gpu_broken.txt 2>&1
echo "broken LN bits test rc=$? (must be non-zero) ($((SECONDS-t0)) s)"; tail -4 $L/kernels_gpu_broken.txt | cut -c1-300
timeout 120 $B/bench_gemm_algos --batch 32 --reps 20 --search 1 > $L/gemm_search_bs32.txt 2>&1
echo "search bs32 rc=$? ($((SECONDS-t0)) s)"; grep -E "search" $L/gemm_search_bs32.txt | cut -c1-330
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error" $L/kernels_gpu.txt | head -8
timeout 150 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | head -5
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout $((500-(SECONDS-t0))) $B/test_e2e_gpu --report_level=short > $L/e2e_gpu.txt 2>&1
echo "e2e_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/e2e_gpu.txt; grep -E "error" $L/e2e_gpu.txt | head -5
if [ $((SECONDS-t0)) -lt 430 ]; then
  timeout $((540-(SECONDS-t0))) $B/bench_gemm_algos --batch 256 --reps 10 --search 1 > $L/gemm_search_bs256.txt 2>&1
  echo "search bs256 rc=$? ($((SECONDS-t0)) s)"; grep -E "search" $L/gemm_search_bs256.txt | cut -c1-330
fi
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
