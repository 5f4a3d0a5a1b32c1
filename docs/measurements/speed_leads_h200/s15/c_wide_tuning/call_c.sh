#!/usr/bin/env bash
# Call C (session 15): the wider GEMM tuning (8610f49) against the heuristic's list only (VIT_GEMM_TUNE_WIDE=0),
# one binary, alternating step runs at batch 32 and 256; test_kernels_gpu's tuning test (the tuned GEMMs give the
# untuned bits) and 30-step ViT-B/16 training with and without the wider tuning (the same bits expected); then
# the README's table (gpu_machine_checks.sh speed) on these binaries.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry51/main; D=.devcarry51/data
L=$OUT/logs; mkdir -p $L; rm -rf results/c_*
timeout 90 $B/test_kernels_gpu --run_test=gemm_tuning_changes_no_bit --log_level=message --report_level=short > $L/kernels_gpu_tuning.txt 2>&1
echo "tuning test rc=$? ($((SECONDS-t0)) s)"; grep -E "GEMM tuning|error" $L/kernels_gpu_tuning.txt | head -5; tail -2 $L/kernels_gpu_tuning.txt
i=0
for v in wide list list wide; do
  i=$((i+1)); [ $v = list ] && W=0 || W=1
  VIT_GEMM_TUNE_WIDE=$W BUILD_DIR=$B bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name c_${i}_$v > $L/speed_${i}_$v.txt 2>&1
  echo "$i $v: $(grep -E '^throughput' $L/speed_${i}_$v.txt | sed 's/ (p10.*peak memory/, peak/' | cut -c1-90 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
grep -h "GEMM tuning" $L/speed_1_wide.txt $L/speed_2_list.txt | cut -c1-250
for v in list wide wide2; do
  [ $v = list ] && W=0 || W=1
  VIT_GEMM_TUNE_WIDE=$W timeout 100 mpirun --bind-to none -np 1 $B/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 --set run.device=cuda \
    --set model.hidden=768 --set model.heads=12 --set model.mlp_dim=3072 --set model.depth=12 \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set train.steps=30 \
    --set run.output_dir=/tmp/bw --set run.name=$v --set run.progress=false > $L/train_$v.txt 2>&1 || echo "train $v rc=$?"
done
python3 - <<'PY' 2>&1 | tee $L/bitwise.txt
import json
def steps(v):
    return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/bw/{v}/rank_0.jsonl")) if j.get("type") == "step"]
a, b, c = steps("list"), steps("wide"), steps("wide2")
print(f"ViT-B/16 (64 px, patch 8) bf16 batch 32, 30 steps: wide vs list {'identical' if a == b and a else 'DIFFER'}; wide rerun {'identical' if b == c and b else 'DIFFERS'} ({len(b)} steps); last {a[-1] if a else None} / {b[-1] if b else None}")
PY
echo "($((SECONDS-t0)) s)"
rm -rf results/speed_np1; export VIT_GIT_REVISION=8610f49
OUT=$L timeout $((560-(SECONDS-t0))) bash tests/gpu/gpu_machine_checks.sh $B $D speed > $L/table.txt 2>&1
echo "table rc=$? ($((SECONDS-t0)) s)"; grep -E "throughput" $L/table.txt | head -12 | cut -c1-200
cp results/speed_np1/summary.md $L/speed_np1.md 2>/dev/null; cp -r results/speed_np1 $L/ 2>/dev/null
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
