#!/usr/bin/env bash
# Call C: 3-stage LayerNorm backward (new3) against the 2-stage one (new): broken-on-purpose test, LN tests,
# the same bits in training, kernel figures, alternating step A/B.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; D=.devcarry30/data
L=$OUT/logs; mkdir -p $L
timeout 60 .devcarry30/broken3/test_kernels_gpu -t layernorm_forward_backward --report_level=short > $L/broken3_ln_stage.txt 2>&1
echo "broken3 (row i+2 staged over row i+1) rc=$?"; grep -cE "error" $L/broken3_ln_stage.txt; tail -3 $L/broken3_ln_stage.txt
timeout 200 .devcarry30/new3/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "FAIL|error" $L/kernels_gpu.txt | head -5
for v in new new3; do
  mpirun --bind-to none -np 1 .devcarry30/$v/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 --set run.device=cuda \
    --set model.hidden=768 --set model.heads=12 --set model.mlp_dim=3072 --set model.depth=12 \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set train.steps=30 \
    --set run.output_dir=/tmp/bw --set run.name=$v --set run.progress=false > /tmp/train_$v.txt 2>&1; echo "train $v rc=$?"
done
python3 - <<'PY' 2>&1 | tee $L/bitwise_new_vs_new3.txt
import json
def steps(v):
    return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/bw/{v}/rank_0.jsonl")) if j.get("type") == "step"]
a, b = steps("new"), steps("new3")
print(f"ViT-B/16 (12 blocks, 64 px, patch 8) bf16 batch 32, 30 steps, 2-stage vs 3-stage LayerNorm backward: {'identical' if a == b and a else 'DIFFER'} ({len(a)} steps); last {a[-1] if a else None}")
PY
for b in 32 256; do
  timeout 120 .devcarry30/new3/bench_kernels --batch $b --dtype bf16 > $L/bench_kernels_new3_bs$b.txt 2>&1
  echo "bench_kernels new3 bs$b rc=$?"; grep -E "^layernorm" $L/bench_kernels_new3_bs$b.txt
done
i=0
for v in new new3 new3 new new3 new; do
  i=$((i+1))
  BUILD_DIR=.devcarry30/$v bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name ln3_${i}_$v > $L/speed_${i}_$v.txt 2>&1
  echo "$i $v: $(grep -E '^throughput' $L/speed_${i}_$v.txt | cut -c1-60 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
