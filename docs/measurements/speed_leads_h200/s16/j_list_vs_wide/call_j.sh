#!/usr/bin/env bash
# Call J (session 16): ca310a9 (cache entries kept apart by the kind of tuning). The GPU cache test; then the
# wide tuning's choices of call I's table (its results/speed_np1/gemm_tuning.tsv, carried) against the heuristic's
# list (plugin.gemm_autotune_wide=false: tuned by its first run into the same file, then read), alternating
# L W W L L W W L at batch 32 and 256, one H200.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry55/main
L=$OUT/logs; mkdir -p $L; rm -rf results/j_* /tmp/tj; mkdir -p /tmp/tj; cp .devcarry55/table_cache.tsv /tmp/tj/cache.tsv
timeout 90 $B/test_kernels_gpu --run_test=gemm_tuning_cache_skips_the_timing --log_level=message --report_level=short > $L/kernels_gpu_cache.txt 2>&1
echo "cache test rc=$? ($((SECONDS-t0)) s)"; grep -E "GEMM tuning|error" $L/kernels_gpu_cache.txt | cut -c1-250 | head -8; tail -3 $L/kernels_gpu_cache.txt
for bs in 32 256; do
  i=0
  for v in L W W L L W W L; do
    i=$((i+1)); a=(); [ $v = L ] && a=(--set plugin.gemm_autotune_wide=false)
    timeout 120 mpirun --bind-to none -np 1 $B/vit_hpc configs/benchmark.yaml --set benchmark.enabled=true --set run.device=cuda \
      --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=$bs --set run.output_dir=results \
      --set run.name=j_${bs}_${i}_$v --set run.progress=false --set benchmark.steps=30 --set benchmark.warmup_steps=5 \
      --set plugin.gemm_tuning_cache=/tmp/tj/cache.tsv "${a[@]}" > $L/bench_${bs}_${i}_$v.txt 2>&1
    echo "bs$bs $i $v rc=$?: $(grep -E '^throughput' $L/bench_${bs}_${i}_$v.txt | cut -c1-28) | $(grep -E 'GEMM tuning' $L/bench_${bs}_${i}_$v.txt | sed 's/.*GEMM tuning: //' | cut -c1-60)...$(grep -E 'GEMM tuning' $L/bench_${bs}_${i}_$v.txt | grep -oE 'cache .*' | cut -c1-90)"
  done
done
cp /tmp/tj/cache.tsv $L/cache_after.tsv
LOGDIR=$L python3 - <<'PY' 2>&1 | tee $L/summary.txt
import os, re, glob, statistics as st
for bs in (32, 256):
    for v in ("L", "W"):
        xs = [float(re.search(r"throughput ([0-9.]+)", open(f).read()).group(1)) for f in sorted(glob.glob(os.environ["LOGDIR"] + f"/bench_{bs}_*_{v}.txt"))]
        print(f"batch {bs} {'list' if v == 'L' else 'wide'}: {xs} mean {round(st.mean(xs), 1) if xs else None}")
PY
echo "done ($((SECONDS-t0)) s)"
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
