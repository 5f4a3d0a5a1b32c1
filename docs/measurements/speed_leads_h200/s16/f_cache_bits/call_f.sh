#!/usr/bin/env bash
# Call F (session 16): 30-step ViT-B/16 training (64 px, patch 8, bf16, batch 32) with the list tuning and no cache,
# the wide tuning with a cold cache (written), and with that cache warm (read): the same bits expected (baf6a55).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry52/main; D=.devcarry52/data
L=$OUT/logs; mkdir -p $L; rm -rf /tmp/bw /tmp/tc2; mkdir -p /tmp/tc2
C2=/tmp/tc2/train.tsv
for v in nocache wide_cold wide_warm; do
  a=(); [ $v != nocache ] && a=(--set plugin.gemm_autotune_wide=true --set plugin.gemm_tuning_cache=$C2)
  s=$SECONDS
  timeout 150 mpirun --bind-to none -np 1 $B/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 --set run.device=cuda \
    --set model.hidden=768 --set model.heads=12 --set model.mlp_dim=3072 --set model.depth=12 \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set train.steps=30 \
    --set run.output_dir=/tmp/bw --set run.name=$v --set run.progress=false "${a[@]}" > $L/train_$v.txt 2>&1 || echo "train $v rc=$?"
  echo "train $v wall $((SECONDS-s)) s; cache lines: $(grep -vc '^#' $C2 2>/dev/null)"
done
python3 - <<'PY' 2>&1 | tee $L/bitwise.txt
import json
def steps(v):
    return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/bw/{v}/rank_0.jsonl")) if j.get("type") == "step"]
a, b, c = steps("nocache"), steps("wide_cold"), steps("wide_warm")
print(f"ViT-B/16 (64 px, patch 8) bf16 batch 32, 30 steps: wide+cold cache vs list {'identical' if a == b and a else 'DIFFER'}; wide+warm cache {'identical' if b == c and b else 'DIFFERS'} ({len(b)} steps); last {a[-1] if a else None} / {c[-1] if c else None}")
PY
cp $C2 $L/train_cache.tsv
echo "done ($((SECONDS-t0)) s)"
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
