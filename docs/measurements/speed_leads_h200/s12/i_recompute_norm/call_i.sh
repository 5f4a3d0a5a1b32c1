#!/usr/bin/env bash
# Call I (session 12): train.recompute_norm (binaries of 50f143a): test_model_gpu (recompute_gelu+norm bit for
# bit against the stored run), test_kernels_gpu's deferred-fold case on the review commit's code, speed and peak
# memory of the default, +recompute_gelu, +recompute_norm and both at batch 32 and 256, and 30-step training with
# recompute_gelu alone and with recompute_norm (the same bits expected).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry38/new; D=.devcarry33/data
L=$OUT/logs; mkdir -p $L
timeout 150 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
rc=$?; echo "model_gpu rc=$rc ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error|recompute_gelu\+norm" $L/model_gpu.txt | head -8
timeout 60 $B/test_kernels_gpu --run_test=deferred_folds_give_the_immediate_bits --report_level=short > $L/folds.txt 2>&1
echo "deferred folds rc=$? ($((SECONDS-t0)) s)"; tail -2 $L/folds.txt
BUILD_DIR=$B bash run_benchmark.sh --no-build --np 1 --precision bf16 \
  --plugins "torch_ddp_fp16 torch_ddp_fp16+recompute_gelu torch_ddp_fp16+recompute_norm torch_ddp_fp16+recompute_gelu+recompute_norm" \
  --batch-sizes "32 256" --steps 30 --warmup 5 --name rn > $L/speed.txt 2>&1
echo "speed rc=$? ($((SECONDS-t0)) s)"; cp results/rn/summary.md $L/speed.md 2>/dev/null; grep -E "^\| (throughput|max memory)" $L/speed.md
for v in gelu gelu_norm gelu_norm2; do
  extra="--set train.recompute_gelu=true"; [ $v != gelu ] && extra="$extra --set train.recompute_norm=true"
  timeout 100 mpirun --bind-to none -np 1 $B/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 --set run.device=cuda \
    --set model.hidden=768 --set model.heads=12 --set model.mlp_dim=3072 --set model.depth=12 $extra \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set train.steps=30 \
    --set run.output_dir=/tmp/bw --set run.name=$v --set run.progress=false > $L/train_$v.txt 2>&1 || echo "train $v rc=$?"
done
python3 - <<'PY' 2>&1 | tee $L/bitwise.txt
import json
def steps(v):
    return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/bw/{v}/rank_0.jsonl")) if j.get("type") == "step"]
a, b, c = steps("gelu"), steps("gelu_norm"), steps("gelu_norm2")
print(f"ViT-B/16 (64 px, patch 8) bf16 batch 32, 30 steps, recompute_gelu with and without recompute_norm: {'identical' if a == b and a else 'DIFFER'}; rerun {'identical' if b == c and b else 'DIFFERS'} ({len(b)} steps); last {a[-1] if a else None} / {b[-1] if b else None}")
PY
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
