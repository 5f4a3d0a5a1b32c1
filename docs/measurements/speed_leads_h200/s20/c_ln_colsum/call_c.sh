#!/usr/bin/env bash
# Call C (session 20): the LayerNorm backward that sums dinp's columns (proj's and fc2's bias gradients; binaries
# of HEAD, .devcarry70/main) against call A's 07e6e08 (.devcarry68/main): test_kernels_gpu whole; the new test on
# a build whose fused sums leave warp 0 out (must fail); test_model_gpu; vit_hpc bf16 default at batch 32 and 256,
# 07e6e08 and HEAD alternating, three rounds; test_e2e_gpu whole.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tar xJf .devcarry68/bins.tar.xz -C .devcarry68 && tar xJf .devcarry70/bins.tar.xz -C .devcarry70 && echo unpacked
t0=$SECONDS; B=.devcarry70/main; D=.devcarry70/data
L=$OUT/logs; mkdir -p $L
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error|SKIPPED" $L/kernels_gpu.txt | cut -c1-220 | head -8
timeout 60 .devcarry70/broken/test_kernels_gpu --run_test=layernorm_backward_sums_dinp_columns --report_level=short > $L/kernels_gpu_broken.txt 2>&1
echo "broken build rc=$? (must fail)"; tail -3 $L/kernels_gpu_broken.txt; grep -E "error" $L/kernels_gpu_broken.txt | cut -c1-260 | head -4
timeout 100 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | cut -c1-220 | head -5
mkdir -p results/tune
for r in 1 2 3; do
  for v in 68/main 70/main; do
    n=$(echo $v | tr / _)_$r
    rm -rf results/$n; mkdir -p results/$n; cp results/tune/gemm_tuning.tsv results/$n/ 2>/dev/null
    BUILD_DIR=.devcarry$v timeout 150 bash run_benchmark.sh --no-build --np 1 --precision bf16 \
      --plugins torch_ddp_fp16 --batch-sizes "32 256" --steps 30 --warmup 5 --name $n > $L/$n.txt 2>&1
    echo "round $r $v rc=$? ($((SECONDS-t0)) s)"; grep -E "^\| throughput" results/$n/summary.md | head -2 | tr '\n' ' '; echo
    [ -f results/tune/gemm_tuning.tsv ] || cp results/$n/gemm_tuning.tsv results/tune/ 2>/dev/null
    cp results/$n/summary.md $L/$n.md 2>/dev/null
  done
done
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout $((590-(SECONDS-t0))) $B/test_e2e_gpu --report_level=short > $L/e2e_gpu.txt 2>&1
echo "e2e_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/e2e_gpu.txt; grep -E "error" $L/e2e_gpu.txt | cut -c1-220 | head -5
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
