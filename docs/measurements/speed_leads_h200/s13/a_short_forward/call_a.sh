#!/usr/bin/env bash
# Call A (session 13): the short-sequence attention forward (60a4cc6).
# test_kernels_gpu's attention cases, bench_kernels at batch 32 / 256, then (if the tests pass) alternating
# step runs of the same binary with the short forward (default) and cuDNN's (+cudnn_attention_forward),
# 30-step ViT-B/16 training (short forward twice: the same bits expected; cuDNN's forward once), test_model_gpu.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry40/new; D=.devcarry33/data
L=$OUT/logs; mkdir -p $L
timeout 150 $B/test_kernels_gpu --run_test=attention_short_forward,attention_short_backward,attention_cudnn_path --report_level=short --log_level=message > $L/kernels_attention.txt 2>&1
rc=$?; echo "kernels attention rc=$rc ($((SECONDS-t0)) s)"; tail -3 $L/kernels_attention.txt; grep -E "error" $L/kernels_attention.txt | head -12
grep -E "stats|attention_fwd out" $L/kernels_attention.txt | grep "B2 T197" | head -6
for bs in 32 256; do
timeout 100 $B/bench_kernels --batch $bs --dtype bf16 > $L/bench_bs$bs.txt 2>&1; echo "bench $bs rc=$?"; grep -E "^attention (fwd|bwd) cudnn" $L/bench_bs$bs.txt
done
if [ $rc -ne 0 ]; then tar czf $OUT/logs.tgz -C $OUT logs; exit 0; fi
for i in 1 2 3; do
  BUILD_DIR=$B bash run_benchmark.sh --no-build --np 1 --plugins "torch_ddp_fp16 torch_ddp_fp16+cudnn_attention_forward" --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --name a_$i > $L/speed_$i.txt 2>&1
  echo "$i: $(grep -E '^throughput' $L/speed_$i.txt | sed 's/ (p10.*peak memory/, peak/' | cut -c1-100 | tr '\n' '|') ($((SECONDS-t0)) s)"
done
for v in short short2 cudnn; do
  x=(); [ $v = cudnn ] && x=(--set model.attention_forward=cudnn)
  timeout 100 mpirun --bind-to none -np 1 $B/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 --set run.device=cuda \
    --set model.hidden=768 --set model.heads=12 --set model.mlp_dim=3072 --set model.depth=12 \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set train.steps=30 \
    --set run.output_dir=/tmp/bw --set run.name=$v --set run.progress=false "${x[@]}" > $L/train_$v.txt 2>&1 || echo "train $v rc=$?"
done
python3 - <<'PY' 2>&1 | tee $L/bitwise.txt
import json
def steps(v):
    return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/bw/{v}/rank_0.jsonl")) if j.get("type") == "step"]
a, b, c = steps("short"), steps("short2"), steps("cudnn")
print(f"ViT-B/16 (64 px, patch 8) bf16 batch 32, 30 steps: short forward rerun {'identical' if a == b and a else 'DIFFERS'} ({len(a)} steps)")
for x, y in zip(a, c):
    if x["step"] in (1, 2, 5, 10, 20, 30): print(f"step {x['step']}: loss {x['loss']:.6f} (cuDNN fwd {y['loss']:.6f}), grad_norm {x['grad_norm']:.5f} ({y['grad_norm']:.5f})")
PY
timeout 150 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | head -5
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
