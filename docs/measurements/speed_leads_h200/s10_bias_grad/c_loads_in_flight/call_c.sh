#!/usr/bin/env bash
# Call C (session 10): column sums with rows of loads in flight (new = c76ad17), a broken build
# (fold drops the last split), a kDepth variant (d1: GELU 1, plain 2) in bench_kernels, alternating whole-step A/B
# against 3fbaa06 (b0). (Recreated from the session's record: the original lived in the ignored .devcarry31/d1.)
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; D=.devcarry31/data; B=.devcarry31/new
L=$OUT/logs; mkdir -p $L
timeout 100 .devcarry31/broken/test_kernels_gpu -t matmul_forward_backward,gelu_forward_backward --report_level=short > $L/broken_fold.txt 2>&1
echo "broken (fold drops the last split) rc=$?"; tail -3 $L/broken_fold.txt; grep -E "dbias" $L/broken_fold.txt | grep FAIL | head -4; grep -c FAIL $L/broken_fold.txt
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "FAIL|error" $L/kernels_gpu.txt | head -5
for b in 32 256; do
  for v in b0 new d1; do
    timeout 120 .devcarry31/$v/bench_kernels --batch $b --dtype bf16 > $L/bench_kernels_${v}_bs$b.txt 2>&1
    echo "bench_kernels $v bs$b rc=$?"; grep -E "matmul bwd|gelu bwd|column sum|step estimate, cudnn" $L/bench_kernels_${v}_bs$b.txt | cut -c1-100
  done
done
echo "($((SECONDS-t0)) s)"
i=0
for v in new b0 b0 new new b0; do
  i=$((i+1))
  BUILD_DIR=.devcarry31/$v bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name cc_${i}_$v > $L/speed_${i}_$v.txt 2>&1
  echo "$i $v: $(grep -E '^throughput' $L/speed_${i}_$v.txt | cut -c1-60 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
