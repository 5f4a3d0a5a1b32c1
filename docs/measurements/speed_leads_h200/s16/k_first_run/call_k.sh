#!/usr/bin/env bash
# Call K (session 16): is the first benchmark run of a fresh GPU machine slower (the tables' default column
# runs first)? ff8e698, the default ViT-B/16 bf16 benchmark at batch 32 three times, then batch 256 three
# times, one tuning cache for all; the SM clock before and after.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry56/main
L=$OUT/logs; mkdir -p $L; rm -rf results/k_*
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $L/gpu_before.txt 2>&1; cat $L/gpu_before.txt
for bs in 32 256; do
  for i in 1 2 3; do
    timeout 100 mpirun --bind-to none -np 1 $B/vit_hpc configs/benchmark.yaml --set benchmark.enabled=true --set run.device=cuda \
      --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=$bs --set run.output_dir=results/k \
      --set run.name=k_${bs}_$i --set run.progress=false --set benchmark.steps=30 --set benchmark.warmup_steps=5 > $L/bench_${bs}_$i.txt 2>&1
    echo "bs$bs run $i rc=$?: $(grep -E '^throughput' $L/bench_${bs}_$i.txt | cut -c1-28) | $(grep -oE 'measured [0-9]+ TFLOP/s' $L/bench_${bs}_$i.txt) | $(grep -oE '[0-9.]+ s choosing' $L/bench_${bs}_$i.txt) ($((SECONDS-t0)) s)"
  done
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $L/gpu_after.txt 2>&1; cat $L/gpu_after.txt
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
