#!/usr/bin/env bash
# Call F: patchify one block per patch (patch = 6f... binaries) against d5dcf27 (gelu): broken-on-purpose test,
# kernels, model, training bits against d5dcf27, alternating A/B, one profiled run.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; D=.devcarry30/data; B=.devcarry30/patch
L=$OUT/logs; mkdir -p $L
timeout 60 .devcarry30/brokenp/test_kernels_gpu -t patchify_matches_cpu --report_level=short > $L/broken_patchify_order.txt 2>&1
echo "broken (NHWC order) rc=$?"; tail -3 $L/broken_patchify_order.txt
timeout 150 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "FAIL|error" $L/kernels_gpu.txt | head -5; grep -E "^patchify" $L/kernels_gpu.txt | head -12
for v in gelu patch; do
  mpirun --bind-to none -np 1 .devcarry30/$v/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 --set run.device=cuda \
    --set model.hidden=768 --set model.heads=12 --set model.mlp_dim=3072 --set model.depth=12 \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set train.steps=30 \
    --set run.output_dir=/tmp/bw --set run.name=$v --set run.progress=false > /tmp/train_$v.txt 2>&1; echo "train $v rc=$?"
done
python3 - <<'PY' 2>&1 | tee $L/bitwise_gelu_vs_patch.txt
import json
def steps(v):
    return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/bw/{v}/rank_0.jsonl")) if j.get("type") == "step"]
a, b = steps("gelu"), steps("patch")
print(f"ViT-B/16 (12 blocks, 64 px, patch 8) bf16 batch 32, 30 steps, d5dcf27 vs the new patchify: {'identical' if a == b and a else 'DIFFER'} ({len(a)} steps); last {b[-1] if b else None}")
PY
i=0
for v in gelu patch patch gelu; do
  i=$((i+1))
  BUILD_DIR=.devcarry30/$v bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name p_${i}_$v > $L/speed_${i}_$v.txt 2>&1
  echo "$i $v: $(grep -E '^throughput' $L/speed_${i}_$v.txt | cut -c1-60 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
BUILD_DIR=$B bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --profile --name p_prof > $L/speed_patch_profile.txt 2>&1
grep -E "^throughput|patchify" $L/speed_patch_profile.txt
timeout 100 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
