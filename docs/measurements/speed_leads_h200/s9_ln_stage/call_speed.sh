#!/usr/bin/env bash
# Call B: LayerNorm backward kernel figures, then alternating A/B of the step: base (a6c857f: separate residual adds),
# fused (665ea27: residual adds in the GEMMs), new (bb171b8: + staged LayerNorm backward).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS
L=$OUT/logs; mkdir -p $L
for b in 32 256; do
  timeout 120 .devcarry30/new/bench_kernels --batch $b --dtype bf16 > $L/bench_kernels_bs$b.txt 2>&1
  echo "bench_kernels bs$b rc=$?"; grep -E "^layernorm" $L/bench_kernels_bs$b.txt
done
i=0
for v in fused new new fused base new fused; do
  i=$((i+1))
  BUILD_DIR=.devcarry30/$v bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name ab${i}_$v > $L/speed_${i}_$v.txt 2>&1
  echo "$i $v: $(grep -E '^throughput' $L/speed_${i}_$v.txt | cut -c1-100 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
