#!/usr/bin/env bash
# Call F (session 14, branch ln-fwd-regs, edd06a7): the LayerNorm forward with the row in registers. One binary,
# VIT_LN_FWD_ROWS=1 for the old three-pass kernel: the LayerNorm test cases of test_kernels_gpu (bits of both),
# alternating step runs with the op profile (batch 32 and 256), 30-step ViT-B/16 training with either (same bits).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry54/new; D=.devcarry50/data
L=$OUT/logs; mkdir -p $L; rm -rf results/f_*
timeout 60 $B/test_kernels_gpu --report_level=short --run_test=layernorm_forward_backward,layernorm_forward_rows_in_registers_give_the_same_bits,residual_layernorm_forward_is_add_then_layernorm > $L/kernels_gpu_ln.txt 2>&1
echo "kernels_gpu LN rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu_ln.txt; grep -E "error" $L/kernels_gpu_ln.txt | head -6
i=0
for v in regs rows regs rows; do
  i=$((i+1)); [ $v = rows ] && export VIT_LN_FWD_ROWS=1 || unset VIT_LN_FWD_ROWS
  BUILD_DIR=$B timeout 45 bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 --batch-sizes "32 256" --steps 30 --warmup 5 --profile --name f_${i}_$v > $L/speed_${i}_$v.txt 2>&1
  echo "$i $v: $(grep -E '^throughput' $L/speed_${i}_$v.txt | sed 's/ (p10.*peak memory/, peak/' | cut -c1-70 | tr '\n' '|') LN fwd: $(grep -E '^ +layernorm_forward' $L/speed_${i}_$v.txt | awk '{print $2" ms "$5" "$6}' | tr '\n' '|') ($((SECONDS-t0)) s)"
  [ $((SECONDS-t0)) -gt 170 ] && break
done
unset VIT_LN_FWD_ROWS
for v in regs rows; do
  [ $((SECONDS-t0)) -gt 205 ] && { echo "train $v: no time left"; continue; }
  [ $v = rows ] && export VIT_LN_FWD_ROWS=1 || unset VIT_LN_FWD_ROWS
  timeout 30 mpirun --bind-to none -np 1 $B/vit_hpc tests/train/e2e_base.yaml --set data.path=$PWD/$D/beans_64.h5 --set run.device=cuda \
    --set model.hidden=768 --set model.heads=12 --set model.mlp_dim=3072 --set model.depth=12 \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=32 --set train.steps=30 \
    --set run.output_dir=/tmp/bw --set run.name=$v --set run.progress=false > $L/train_$v.txt 2>&1 || echo "train $v rc=$?"
done
unset VIT_LN_FWD_ROWS
python3 - <<'PY' 2>&1 | tee $L/bitwise.txt
import json
def steps(v):
    try:
        return [{k: j[k] for k in ("step", "loss", "grad_norm")} for j in map(json.loads, open(f"/tmp/bw/{v}/rank_0.jsonl")) if j.get("type") == "step"]
    except OSError:
        return []
a, b = steps("regs"), steps("rows")
print(f"ViT-B/16 (64 px, patch 8) bf16 batch 32, 30 steps: registers vs three-pass {'identical' if a == b and a else 'DIFFER or missing'} ({len(a)} / {len(b)} steps)")
PY
echo "done ($((SECONDS-t0)) s)"
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
