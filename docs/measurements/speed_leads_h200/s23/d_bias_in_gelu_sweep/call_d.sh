#!/usr/bin/env bash
# Call D (session 23): binaries of 18c5032 (fc1's bias added by the GELU passes; the biased GELU forward as a
# grid-stride sweep) and of 4ff5093 (old). bench_kernels at batch 256 (GELU lines); three alternating rounds
# old / new at batch 32 and 256; then test_kernels_gpu's matmul and GELU cases, test_model_gpu and
# test_e2e_gpu whole (new).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=.devcarry82
mkdir -p $C/old && tar xJf $C/bins_new.tar.xz -C $C/main && tar xJf $C/bins_old.tar.xz -C $C/old && echo unpacked
t0=$SECONDS; B=$C/main; D=$C/data
L=$OUT/logs; mkdir -p $L
timeout 60 $B/bench_kernels --batch 256 --dtype bf16 > $L/bench_kernels_bs256.txt 2>&1
echo "bench rc=$? ($((SECONDS-t0)) s)"; grep -E "fc1|gelu" $L/bench_kernels_bs256.txt | cut -c1-160 | head -12
mkdir -p results
for r in 1 2 3; do
  for v in old new; do
    n=${v}_$r; src=$C/main; [ $v = old ] && src=$C/old
    rm -rf $C/b_$v; mkdir -p $C/b_$v; cp $B/vit_results $C/b_$v/; cp $src/vit_hpc $C/b_$v/vit_hpc
    rm -rf results/$n; mkdir -p results/$n; cp $C/tune/gemm_tuning.tsv results/$n/
    BUILD_DIR=$C/b_$v timeout 150 bash run_benchmark.sh --no-build --np 1 --precision bf16 \
      --plugins torch_ddp_fp16 --batch-sizes "32 256" --steps 30 --warmup 5 --name $n > $L/$n.txt 2>&1
    echo "round $r $v rc=$? ($((SECONDS-t0)) s)"; grep -E "^\| throughput" results/$n/summary.md | head -2 | tr '\n' ' '; echo
    grep -E "GPU power" $L/$n.txt | cut -c1-120
    cp results/$n/summary.md $L/$n.md 2>/dev/null
  done
done
timeout 60 $B/test_kernels_gpu --report_level=short \
  --run_test=matmul_forward_backward,gelu_forward_backward,gelu_with_the_bias_of_the_layer_before > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error" $L/kernels_gpu.txt | cut -c1-220 | head -8
timeout 120 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | cut -c1-220 | head -5
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e \
  timeout 200 $B/test_e2e_gpu --report_level=short --log_level=message > $L/e2e_gpu.txt 2>&1
echo "test_e2e_gpu rc=$? ($((SECONDS-t0)) s)"; tail -4 $L/e2e_gpu.txt; grep -E "error" $L/e2e_gpu.txt | cut -c1-220 | head -8
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
