#!/usr/bin/env bash
# Call G: after the kStage split of the LayerNorm backward: its test cases and the whole-model test.
set -u
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
t0=$SECONDS; B=.devcarry30/final
timeout 60 $B/test_kernels_gpu -t layernorm_forward_backward,parameter_gradients_assigned_are_added_to_zero --report_level=short > $OUT/kernels_gpu_layernorm.txt 2>&1
echo "kernels_gpu layernorm rc=$? ($((SECONDS-t0)) s)"; tail -3 $OUT/kernels_gpu_layernorm.txt; grep -E "error" $OUT/kernels_gpu_layernorm.txt | head -3
timeout 100 $B/test_model_gpu --report_level=short > $OUT/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $OUT/model_gpu.txt
