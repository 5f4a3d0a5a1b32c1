#!/usr/bin/env bash
# Call F (session 11): plugin.reduce_dtype=bf16 on the GPU (a368656): 2 ranks sharing the one H200 (collectives
# through MPI with GPU data staged), small model bf16, 20 steps, fp32 vs bf16 reduction, torch_ddp_fp16 and
# low_level_zero stage 2. (NCCL's bf16 reduction needs 2 GPUs: not lent.)
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; C=.devcarry33; D=$C/data; B=$C/rd
L=$OUT/logs; mkdir -p $L
for plugin in torch_ddp_fp16 low_level_zero; do
  for rd in fp32 bf16; do
    timeout 90 mpirun --bind-to none --oversubscribe -np 2 $B/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 \
      --set run.device=cuda --set plugin.name=$plugin --set plugin.precision=bf16 --set plugin.reduce_dtype=$rd \
      --set train.batch_size=16 --set train.steps=20 --set run.output_dir=/tmp/rd --set run.name=${plugin}_$rd \
      --set run.progress=false > $L/train_${plugin}_$rd.txt 2>&1
    echo "$plugin reduce $rd rc=$? ($((SECONDS-t0)) s)"
  done
done
python3 - <<'PY' 2>&1 | tee $L/compare.txt
import json
def steps(v):
    try:
        return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/rd/{v}/rank_0.jsonl")) if j.get("type") == "step"]
    except Exception as e:
        return []
for p in ("torch_ddp_fp16", "low_level_zero"):
    a, b = steps(f"{p}_fp32"), steps(f"{p}_bf16")
    if not a or not b:
        print(p, "missing steps", len(a), len(b)); continue
    dl = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))
    dg = max(abs(x["grad_norm"] - y["grad_norm"]) / x["grad_norm"] for x, y in zip(a, b))
    print(f"{p}, 2 ranks on one H200, bf16 compute, 20 steps: reduce fp32 vs bf16: max |loss diff| {dl:.3e}, max relative grad_norm diff {dg:.3e}; step 1 {a[0]} / {b[0]}; step 20 {a[-1]} / {b[-1]}")
PY
grep -h -E "warning|reduce|shared" $L/train_torch_ddp_fp16_bf16.txt | head -5
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
