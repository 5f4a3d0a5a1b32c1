#!/usr/bin/env bash
# Call F3 (session 24): test_kernels_gpu built from d3d825a with one line broken on purpose (the next item's
# Q and dO load replaced by the current item's: `load_q_do(item)` in attention_sm90a.cu), stripped, carried in
# .devcarry85/. Its sm90a backward case must fail (it did: 32 of 166 assertions, kernels_gpu_sm90a_broken.txt).
export LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib:/usr/local/cuda/lib64
export NCCL_NVLS_ENABLE=0
timeout 90 .devcarry85/test_kernels_gpu_broken --report_level=short \
  --run_test=attention_sm90a_backward_gives_the_mma_bits > $OUT/broken.txt 2>&1
echo rc=$?; grep -c "error" $OUT/broken.txt; tail -3 $OUT/broken.txt
