#!/usr/bin/env bash
# Call E (session 10): whole-row column-sum blocks (new2 = 4c81045) against 7f35963 (new): kernel suite, kernel
# figures, alternating whole-step A/B.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry31/new2
L=$OUT/logs; mkdir -p $L
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "FAIL|error" $L/kernels_gpu.txt | head -5
grep -E "dbias" $L/kernels_gpu.txt | grep -E "tall|n=6455296" | head -6
for b in 32 256; do
  timeout 120 $B/bench_kernels --batch $b --dtype bf16 > $L/bench_kernels_new2_bs$b.txt 2>&1
  echo "bench_kernels new2 bs$b rc=$?"; grep -E "matmul bwd|gelu bwd|column sum|step estimate, cudnn" $L/bench_kernels_new2_bs$b.txt | cut -c1-100
done
timeout 120 $B/bench_kernels --batch 32 --dtype fp32 > $L/bench_kernels_new2_fp32_bs32.txt 2>&1
echo "bench_kernels new2 fp32 bs32 rc=$?"; grep -E "gelu bwd|column sum" $L/bench_kernels_new2_fp32_bs32.txt | cut -c1-100
echo "($((SECONDS-t0)) s)"
i=0
for v in new new2 new2 new new new2; do
  i=$((i+1))
  BUILD_DIR=.devcarry31/$v bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name ce_${i}_$v > $L/speed_${i}_$v.txt 2>&1
  echo "$i $v: $(grep -E '^throughput' $L/speed_${i}_$v.txt | cut -c1-60 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
