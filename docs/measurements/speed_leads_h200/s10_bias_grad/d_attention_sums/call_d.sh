#!/usr/bin/env bash
# Call D (session 10): QKV bias gradient inside the short attention backward, one-wave column sums (new = 7f35963).
# Broken build (the block's warp fold leaves out the last warp), kernel + model suites, kernel figures, alternating
# whole-step A/B against 3fbaa06 (b0), bitwise rerun.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; D=.devcarry31/data; B=.devcarry31/new
L=$OUT/logs; mkdir -p $L
timeout 100 .devcarry31/broken/test_kernels_gpu -t attention_short_backward --report_level=short > $L/broken_attention_sums.txt 2>&1
echo "broken (last warp left out of the QKV bias sums) rc=$?"; tail -3 $L/broken_attention_sums.txt; grep -E "dbias" $L/broken_attention_sums.txt | grep FAIL | head -3; grep -c FAIL $L/broken_attention_sums.txt
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "FAIL|error" $L/kernels_gpu.txt | head -5
grep -E "attention_bwd dbias" $L/kernels_gpu.txt | grep -E "T197" | head -4
timeout 150 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt
for b in 32 256; do
  timeout 120 $B/bench_kernels --batch $b --dtype bf16 > $L/bench_kernels_new_bs$b.txt 2>&1
  echo "bench_kernels new bs$b rc=$?"; grep -E "matmul bwd|gelu bwd|column sum|attention bwd cudnn|step estimate, cudnn" $L/bench_kernels_new_bs$b.txt | cut -c1-100
done
echo "($((SECONDS-t0)) s)"
i=0
for v in b0 new new b0 b0 new; do
  i=$((i+1))
  BUILD_DIR=.devcarry31/$v bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name cd_${i}_$v > $L/speed_${i}_$v.txt 2>&1
  echo "$i $v: $(grep -E '^throughput' $L/speed_${i}_$v.txt | cut -c1-60 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
for v in a b; do
  mpirun --bind-to none -np 1 $B/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 --set run.device=cuda \
    --set model.hidden=768 --set model.heads=12 --set model.mlp_dim=3072 --set model.depth=12 \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set train.steps=30 \
    --set run.output_dir=/tmp/bw --set run.name=$v --set run.progress=false > /tmp/train_$v.txt 2>&1; echo "train $v rc=$?"
done
python3 - <<'PY' 2>&1 | tee $L/bitwise.txt
import json
def steps(v):
    return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/bw/{v}/rank_0.jsonl")) if j.get("type") == "step"]
a, b = steps("a"), steps("b")
print(f"ViT-B/16 (12 blocks, 64 px, patch 8) bf16 batch 32, 30 steps, run twice: {'identical' if a == b and a else 'DIFFER'} ({len(a)} steps); last {a[-1] if a else None}")
PY
echo "($((SECONDS-t0)) s)"
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
