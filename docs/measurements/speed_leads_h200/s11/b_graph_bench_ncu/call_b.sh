#!/usr/bin/env bash
# Call B (session 11): bench_kernels timed as CUDA graphs (vs host launches), and the kernels of a
# batch-32 step under ncu (durations one by one) against the step's time, to size the gaps between kernels.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; C=.devcarry33; D=$C/data
L=$OUT/logs; mkdir -p $L
for b in 32 256; do
  timeout 150 $C/new/bench_kernels --batch $b --dtype bf16 > $L/bench_graph_bs$b.txt 2>&1; echo "graph bs$b rc=$? ($((SECONDS-t0)) s)"
done
timeout 100 $C/new/bench_kernels --batch 32 --dtype bf16 --eager 1 > $L/bench_eager_bs32.txt 2>&1; echo "eager bs32 rc=$? ($((SECONDS-t0)) s)"
paste <(cut -c1-70 $L/bench_eager_bs32.txt) <(cut -c45-70 $L/bench_graph_bs32.txt) | head -60
grep -E "eager|not captured|step estimate" $L/bench_graph_bs256.txt | head
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1); echo "ncu: $NCU"
run() { mpirun --bind-to none -np 1 "$@" $C/base/vit_hpc configs/benchmark.yaml --set benchmark.enabled=true --set run.device=cuda \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set benchmark.steps=40 \
    --set benchmark.warmup_steps=5 --set run.output_dir=/tmp/ncu --set run.name=r$RANDOM --set run.progress=false; }
run > $L/plain_run.txt 2>&1; echo "plain run rc=$?"; tail -3 $L/plain_run.txt
timeout 240 bash -c "$(declare -f run); C=$C D=$D; run $NCU --clock-control none --cache-control none --metrics gpu__time_duration.sum --launch-skip 9000 --launch-count 1500 --csv" > $L/ncu_bs32.csv 2> $L/ncu_bs32.err
echo "ncu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/ncu_bs32.err; wc -l $L/ncu_bs32.csv; head -3 $L/ncu_bs32.csv | cut -c1-300
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
