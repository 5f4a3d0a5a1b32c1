#!/usr/bin/env bash
# Call C (session 11): the MLP backward in place (d4c3d10) against main before it (77847fb binaries, `base`):
# test_kernels_gpu (new in-place lines), test_model_gpu, alternating speed/memory runs, recompute_gelu,
# 30-step training against base (same bits expected) and twice, test_e2e_gpu if time allows.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; C=.devcarry33; D=$C/data; B=$C/new
L=$OUT/logs; mkdir -p $L
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "FAIL|error" $L/kernels_gpu.txt | head -8
timeout 150 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | head -5
i=0
for v in base new new base base new; do
  i=$((i+1))
  BUILD_DIR=$C/$v bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name mlp_${i}_$v > $L/speed_${i}_$v.txt 2>&1
  echo "$i $v: $(grep -E '^throughput' $L/speed_${i}_$v.txt | sed 's/ (p10.*peak memory/, peak/' | cut -c1-90 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
for v in base new; do
  BUILD_DIR=$C/$v bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16+recompute_gelu --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name rg_$v > $L/speed_rg_$v.txt 2>&1
  echo "recompute_gelu $v: $(grep -E '^throughput' $L/speed_rg_$v.txt | sed 's/ (p10.*peak memory/, peak/' | cut -c1-90 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
for v in base new new; do
  for rg in false true; do
    mpirun --bind-to none -np 1 $C/$v/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 --set run.device=cuda \
      --set model.hidden=768 --set model.heads=12 --set model.mlp_dim=3072 --set model.depth=12 --set train.recompute_gelu=$rg \
      --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set train.steps=30 \
      --set run.output_dir=/tmp/bw --set run.name=${v}_$rg --set run.progress=false > /tmp/train_${v}_$rg.txt 2>&1 || echo "train $v $rg rc=$?"
  done
done
python3 - <<'PY' 2>&1 | tee $L/bitwise.txt
import json
def steps(v):
    return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/bw/{v}/rank_0.jsonl")) if j.get("type") == "step"]
for rg in ("false", "true"):
    a, b = steps(f"base_{rg}"), steps(f"new_{rg}")
    print(f"ViT-B/16 (12 blocks, 64 px, patch 8) bf16 batch 32, recompute_gelu {rg}, 30 steps, 77847fb vs d4c3d10: {'identical' if a == b and a else 'DIFFER'} ({len(a)} steps); last {a[-1] if a else None} / {b[-1] if b else None}")
print(f"recompute_gelu true vs false on d4c3d10: {'identical' if steps('new_true') == steps('new_false') else 'DIFFER'}")
PY
echo "($((SECONDS-t0)) s)"
left=$((570-(SECONDS-t0)))
if [ $left -gt 110 ]; then
  mkdir -p /tmp/e2e; env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout $left $B/test_e2e_gpu --report_level=short > $L/e2e_gpu.txt 2>&1
  echo "e2e rc=$? ($((SECONDS-t0)) s)"; grep -E "error" $L/e2e_gpu.txt | head -6; tail -3 $L/e2e_gpu.txt
  grep -E "^low_level_zero stage|^gemini offload" $L/e2e_gpu.txt
else echo "e2e skipped for time ($left s left)"; fi
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
