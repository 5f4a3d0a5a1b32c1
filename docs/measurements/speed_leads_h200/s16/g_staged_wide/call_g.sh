#!/usr/bin/env bash
# Call G (session 16): the wide GEMM tuning in two stages (f9a259d, .devcarry53/main) against the full screening of
# every tile x custom option (baf6a55, .devcarry53/full): the tuning test and the cache test on the staged build;
# then, at batch 32 and 256, each wide form with a cold cache of its own (start-up), and alternating warm runs of
# the list tuning (no cache), the full and the staged wide choices (each from its cache): images/s.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; S=.devcarry53/main; F=.devcarry53/full
L=$OUT/logs; mkdir -p $L; rm -rf results/g_* /tmp/tg; mkdir -p /tmp/tg
timeout 120 $S/test_kernels_gpu --run_test=gemm_tuning_changes_no_bit,gemm_tuning_cache_skips_the_timing --log_level=message --report_level=short > $L/kernels_gpu_tuning.txt 2>&1
echo "tuning tests rc=$? ($((SECONDS-t0)) s)"; grep -E "GEMM tuning|error" $L/kernels_gpu_tuning.txt | cut -c1-330 | head -8; tail -3 $L/kernels_gpu_tuning.txt
bench() {  # name binary batch extra-args...
  local name=$1 bin=$2 bs=$3; shift 3
  local s=$SECONDS
  timeout 200 mpirun --bind-to none -np 1 $bin/vit_hpc configs/benchmark.yaml --set benchmark.enabled=true --set run.device=cuda \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=$bs --set run.output_dir=results \
    --set run.name=g_$name --set run.progress=false --set benchmark.steps=30 --set benchmark.warmup_steps=5 "$@" > $L/bench_$name.txt 2>&1
  local rc=$?
  echo "$name rc=$rc wall $((SECONDS-s)) s: $(grep -E '^throughput' $L/bench_$name.txt | cut -c1-40) | $(grep -E 'GEMM tuning' $L/bench_$name.txt | sed 's/.*GEMM tuning: //' | cut -c1-230)"
}
W=(--set plugin.gemm_autotune_wide=true)
for bs in 32 256; do
  bench full_cold_$bs $F $bs "${W[@]}" --set plugin.gemm_tuning_cache=/tmp/tg/full.tsv
  bench staged_cold_$bs $S $bs "${W[@]}" --set plugin.gemm_tuning_cache=/tmp/tg/staged.tsv
  for r in 1 2; do
    bench list_${bs}_$r $S $bs
    bench full_warm_${bs}_$r $S $bs "${W[@]}" --set plugin.gemm_tuning_cache=/tmp/tg/full.tsv
    bench staged_warm_${bs}_$r $S $bs "${W[@]}" --set plugin.gemm_tuning_cache=/tmp/tg/staged.tsv
  done
  echo "($((SECONDS-t0)) s)"
done
cp /tmp/tg/*.tsv $L/
python3 - <<'PY' 2>&1 | tee $L/same_choices.txt
def load(p):
    return {tuple(l.split("\t")[:3]): l.split("\t")[4] for l in open(p) if not l.startswith("#")}
f, s = load("/tmp/tg/full.tsv"), load("/tmp/tg/staged.tsv")
same = sum(1 for k in f if s.get(k) == f[k])
print(f"plans: full {len(f)}, staged {len(s)}; the same choice for {same}")
PY
echo "done ($((SECONDS-t0)) s)"
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
