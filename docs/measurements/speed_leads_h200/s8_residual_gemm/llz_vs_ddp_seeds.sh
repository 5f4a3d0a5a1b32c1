set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
DATA=$PWD/.devcarry28/data/beans_64.h5
S=/tmp/seeds; mkdir -p $S
cmp() {
/opt/torch/.venv/bin/python3 - "$1" "$2" <<'PY'
import json, struct, sys, numpy as np
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8+n]); d = b[8+n:]
    out = []
    for k in sorted(x for x in h if x != '__metadata__'):
        t = h[k]; s, e = t['data_offsets']; assert t['dtype'] == 'F32', t['dtype']
        out.append(np.frombuffer(d[s:e], dtype=np.float32))
    return np.concatenate(out).astype(np.float64)
a, r = load(sys.argv[1]), load(sys.argv[2])
d = a - r
print(f"max|d| {np.abs(d).max():.3e} relL2 {np.sqrt((d*d).sum()/(r*r).sum()):.3e}")
PY
}
t0=$SECONDS
for seed in 1 2 3; do
  for v in base fused; do
    [ $v = base ] && B=.devcarry28/base || B=.devcarry28/fused
    for p in ddp llz; do
      [ $p = ddp ] && pl="--set plugin.name=torch_ddp_fp16" || pl="--set plugin.name=low_level_zero --set plugin.stage=1"
      n=${v}_${p}_s$seed
      timeout 60 mpirun --oversubscribe --bind-to none --allow-run-as-root -np 2 $B/vit_hpc tests/train/e2e_base.yaml --set data.path=$DATA \
        --set run.output_dir=$S --set run.name=$n --set run.progress=false --set run.cpu_threads=1 --set run.device=cuda \
        --set eval.enabled=false --set train.steps=10 --set plugin.precision=bf16 --set train.batch_size=8 --set train.grad_clip=0.5 \
        --set run.seed=$seed $pl --set checkpoint.export_hf=$S/${n}_export > $S/$n.log 2>&1 || echo "$n rc=$?"
    done
    echo "seed $seed $v: llz stage 1 vs ddp_fp16: $(cmp $S/${v}_llz_s${seed}_export/model.safetensors $S/${v}_ddp_s${seed}_export/model.safetensors) ($((SECONDS-t0)) s)"
  done
done
