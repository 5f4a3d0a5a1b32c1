#!/usr/bin/env bash
# Call F (session 10): issue 14's table from one command (binaries of 4c81045: bias gradients by column sums,
# fused into the GELU and short attention backwards), then test_model_gpu, 30-step training twice, test_e2e_gpu.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export VIT_GIT_REVISION=4c81045dbdbd
t0=$SECONDS; B=.devcarry31/final D=.devcarry31/data
mkdir -p $OUT/logs
bash tests/gpu/gpu_machine_checks.sh $B $D speed 2>&1 | tail -40
echo "speed stage ($((SECONDS-t0)) s)"
timeout 120 $B/test_model_gpu --report_level=short > $OUT/logs/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $OUT/logs/model_gpu.txt
for v in a b; do
  mpirun --bind-to none -np 1 $B/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 --set run.device=cuda \
    --set model.hidden=768 --set model.heads=12 --set model.mlp_dim=3072 --set model.depth=12 \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set train.steps=30 \
    --set run.output_dir=/tmp/bw --set run.name=$v --set run.progress=false > /tmp/train_$v.txt 2>&1; echo "train $v rc=$?"
done
python3 - <<'PY' 2>&1 | tee $OUT/logs/bitwise.txt
import json
def steps(v):
    return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/bw/{v}/rank_0.jsonl")) if j.get("type") == "step"]
a, b = steps("a"), steps("b")
print(f"ViT-B/16 (12 blocks, 64 px, patch 8) bf16 batch 32, 30 steps, run twice: {'identical' if a == b and a else 'DIFFER'} ({len(a)} steps); last {a[-1] if a else None}")
PY
mkdir -p /tmp/e2e; env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout 240 $B/test_e2e_gpu --report_level=short > $OUT/logs/e2e_gpu.txt 2>&1
echo "e2e rc=$? ($((SECONDS-t0)) s)"; grep -E "error" $OUT/logs/e2e_gpu.txt | head -6; tail -3 $OUT/logs/e2e_gpu.txt
grep -E "^low_level_zero stage|^gemini offload" $OUT/logs/e2e_gpu.txt
