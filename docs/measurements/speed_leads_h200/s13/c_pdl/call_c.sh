#!/usr/bin/env bash
# Call C (session 13): programmatic dependent launch (5b2e91c), one binary with VIT_PDL=0 / 1 alternating
# (3 runs each, batch 32 and 256), 30-step ViT-B/16 training with PDL against the binaries of 763b4b0 (the
# same bits expected), test_kernels_gpu and test_model_gpu with PDL on.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry42/new; A=.devcarry42/base; D=.devcarry33/data
L=$OUT/logs; mkdir -p $L
nvidia-smi --query-gpu=driver_version --format=csv,noheader
VIT_PDL=1 timeout 150 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu_pdl.txt 2>&1
rc=$?; echo "kernels_gpu (PDL) rc=$rc ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu_pdl.txt; grep -E "error" $L/kernels_gpu_pdl.txt | head -8
if [ $rc -ne 0 ]; then tar czf $OUT/logs.tgz -C $OUT logs; exit 0; fi
i=0
for p in 0 1 1 0 0 1; do
  i=$((i+1))
  VIT_PDL=$p BUILD_DIR=$B bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name c_${i}_pdl$p > $L/speed_${i}_pdl$p.txt 2>&1
  echo "$i pdl=$p: $(grep -E '^throughput' $L/speed_${i}_pdl$p.txt | sed 's/ (p10.*peak memory/, peak/' | cut -c1-90 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
for v in base pdl pdl2; do
  [ $v = base ] && BD=$A || BD=$B
  VIT_PDL=1 timeout 100 mpirun --bind-to none -np 1 $BD/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 --set run.device=cuda \
    --set model.hidden=768 --set model.heads=12 --set model.mlp_dim=3072 --set model.depth=12 \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set train.steps=30 \
    --set run.output_dir=/tmp/bw --set run.name=$v --set run.progress=false > $L/train_$v.txt 2>&1 || echo "train $v rc=$?"
done
python3 - <<'PY' 2>&1 | tee $L/bitwise.txt
import json
def steps(v):
    return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/bw/{v}/rank_0.jsonl")) if j.get("type") == "step"]
a, b, c = steps("base"), steps("pdl"), steps("pdl2")
print(f"ViT-B/16 (64 px, patch 8) bf16 batch 32, 30 steps: PDL vs base {'identical' if a == b and a else 'DIFFER'}; PDL rerun {'identical' if b == c and b else 'DIFFERS'} ({len(b)} steps)")
PY
VIT_PDL=1 timeout 150 $B/test_model_gpu --report_level=short > $L/model_gpu_pdl.txt 2>&1
echo "model_gpu (PDL) rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu_pdl.txt; grep -E "error" $L/model_gpu_pdl.txt | head -5
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
