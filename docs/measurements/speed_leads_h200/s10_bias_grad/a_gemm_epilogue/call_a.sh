#!/usr/bin/env bash
# Call A (session 10): 3fbaa06's allow_dynamic_smem on a GPU (kernel and model suites), and the weight-gradient
# GEMMs with and without cuBLASLt's bias-gradient epilogue (bench_gemm_algos), batch 32 and 256.
set -u
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
t0=$SECONDS; B=.devcarry31/base; L=$OUT/logs; mkdir -p $L
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
for b in 32 256; do
  timeout 120 $B/bench_gemm_algos --batch $b > $L/gemm_algos_bs$b.txt 2>&1
  echo "bench_gemm_algos bs$b rc=$? ($((SECONDS-t0)) s)"; grep -E "dW|per step|weight grad" $L/gemm_algos_bs$b.txt | cut -c1-200
done
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "FAIL|error" $L/kernels_gpu.txt | head -5
timeout 150 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
