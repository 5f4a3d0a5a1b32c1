#!/usr/bin/env bash
# Call A (session 14): the GEMM workspace sized by the chosen algorithms, the patch projection in dtmp
# (252cee0, "new") against the binaries of 49b89bf (base; main before this session). Alternating step runs
# (bs 32 and 256, default), both with recompute_gelu+recompute_norm (memory), 30-step ViT-B/16 training
# (base once, new twice: the same bits expected), test_kernels_gpu, test_model_gpu, test_e2e_gpu.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry50/new; A=.devcarry50/base; D=.devcarry50/data
L=$OUT/logs; mkdir -p $L; rm -rf results/a_*
i=0
for v in base new new base; do
  i=$((i+1)); [ $v = base ] && BD=$A || BD=$B
  BUILD_DIR=$BD bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name a_${i}_$v > $L/speed_${i}_$v.txt 2>&1
  echo "$i $v: $(grep -E '^throughput' $L/speed_${i}_$v.txt | sed 's/ (p10.*peak memory/, peak/' | cut -c1-90 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
grep -h "GPU workspaces" $L/speed_2_new.txt
for v in base new; do
  [ $v = base ] && BD=$A || BD=$B
  BUILD_DIR=$BD bash run_benchmark.sh --no-build --np 1 --plugins "torch_ddp_fp16+recompute_gelu+recompute_norm" --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name a_mem_$v > $L/speed_mem_$v.txt 2>&1
  echo "$v +recompute_gelu+recompute_norm: $(grep -E '^throughput' $L/speed_mem_$v.txt | sed 's/ (p10.*peak memory/, peak/' | cut -c1-90 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
for v in base new new2; do
  [ $v = base ] && BD=$A || BD=$B
  timeout 100 mpirun --bind-to none -np 1 $BD/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 --set run.device=cuda \
    --set model.hidden=768 --set model.heads=12 --set model.mlp_dim=3072 --set model.depth=12 \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set train.steps=30 \
    --set run.output_dir=/tmp/bw --set run.name=$v --set run.progress=false > $L/train_$v.txt 2>&1 || echo "train $v rc=$?"
done
python3 - <<'PY' 2>&1 | tee $L/bitwise.txt
import json
def steps(v):
    return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/bw/{v}/rank_0.jsonl")) if j.get("type") == "step"]
a, b, c = steps("base"), steps("new"), steps("new2")
print(f"ViT-B/16 (64 px, patch 8) bf16 batch 32, 30 steps: new vs base {'identical' if a == b and a else 'DIFFER'}; new rerun {'identical' if b == c and b else 'DIFFERS'} ({len(b)} steps); last {a[-1] if a else None} / {b[-1] if b else None}")
PY
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error" $L/kernels_gpu.txt | head -8
timeout 150 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | head -5
if [ $((SECONDS-t0)) -lt 370 ]; then
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout $((590-(SECONDS-t0))) $B/test_e2e_gpu --report_level=short > $L/e2e_gpu.txt 2>&1
echo "e2e_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/e2e_gpu.txt; grep -E "error" $L/e2e_gpu.txt | head -5
else echo "e2e_gpu: no time left in this call"; fi
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
