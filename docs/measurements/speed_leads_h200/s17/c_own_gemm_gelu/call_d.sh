#!/usr/bin/env bash
# Call D (session 17): gemm_gelu_cluster (scratch) with clusters of 2 and 4 CTAs (W's tile multicast) at batch 32
# and 256; then test_model_gpu and test_e2e_gpu, whole, on the binaries of 4848e94 (src as 60831bb but a comment).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry60/main; D=.devcarry60/data
L=$OUT/logs; mkdir -p $L
for cl in 2 4; do for m in 6304 50432; do
  timeout 30 .devcarry60/gemm_gelu_cl$cl $m 3072 768 > $L/gemm_gelu_cl${cl}_$m.txt 2>&1; echo "CL=$cl M=$m rc=$?"; cat $L/gemm_gelu_cl${cl}_$m.txt
done; done
echo "($((SECONDS-t0)) s)"
timeout 150 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | head -5
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout $((560-(SECONDS-t0))) $B/test_e2e_gpu --report_level=short > $L/e2e_gpu.txt 2>&1
echo "e2e_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/e2e_gpu.txt; grep -E "error" $L/e2e_gpu.txt | head -5
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
