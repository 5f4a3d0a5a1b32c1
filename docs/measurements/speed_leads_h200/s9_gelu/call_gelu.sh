#!/usr/bin/env bash
# Call D: the fitted-erfc GELU for 16-bit storage (gelu = 43ea...): broken-on-purpose test, kernels, model, bitwise,
# e2e, kernel figures, alternating step A/B against new (bb171b8).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; D=.devcarry30/data; B=.devcarry30/gelu
L=$OUT/logs; mkdir -p $L
timeout 60 .devcarry30/brokeng/test_kernels_gpu -t gelu_correctly_rounded_16bit --report_level=short > $L/broken_gelu_c0.txt 2>&1
echo "broken (c0 x 1.001) rc=$?"; grep -E "^gelu" $L/broken_gelu_c0.txt; tail -3 $L/broken_gelu_c0.txt
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "FAIL|error" $L/kernels_gpu.txt | head -5
grep -E "^gelu|gelu_(fwd|bwd) " $L/kernels_gpu.txt | head -12
for b in 32 256; do
  timeout 120 $B/bench_kernels --batch $b --dtype bf16 > $L/bench_kernels_bs$b.txt 2>&1
  echo "bench_kernels bs$b rc=$?"; grep -E "gelu" $L/bench_kernels_bs$b.txt
done
i=0
for v in new gelu gelu new gelu new; do
  i=$((i+1))
  BUILD_DIR=.devcarry30/$v bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name g_${i}_$v > $L/speed_${i}_$v.txt 2>&1
  echo "$i $v: $(grep -E '^throughput' $L/speed_${i}_$v.txt | cut -c1-60 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
timeout 120 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "bf16|fp16" $L/model_gpu.txt | head -8
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
mkdir -p /tmp/e2e; env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e timeout 300 $B/test_e2e_gpu --report_level=short > $L/e2e_gpu.txt 2>&1
echo "e2e rc=$? ($((SECONDS-t0)) s)"; grep -E "error" $L/e2e_gpu.txt | head -6; tail -3 $L/e2e_gpu.txt
grep -E "^low_level_zero stage|^gemini offload" $L/e2e_gpu.txt
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
