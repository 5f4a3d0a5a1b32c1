#!/usr/bin/env bash
# Call E (session 16): the GEMM tuning cache (plugin.gemm_tuning_cache, baf6a55). test_kernels_gpu whole (with
# the new gemm_tuning_cache_skips_the_timing); ViT-B/16 bf16 benchmark runs with the list tuning and no cache, then
# the wide tuning with a cold cache (written), the same warm (read), the list tuning with the warm cache, at
# batch 32 and 256: wall time of each run, images/s and the tuning note (seconds choosing algorithms); then
# 30-step ViT-B/16 training (64 px, patch 8) without cache, wide + cold cache, wide + warm cache: the same bits.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry52/main; D=.devcarry52/data
L=$OUT/logs; mkdir -p $L; rm -rf results/e_* /tmp/tc; mkdir -p /tmp/tc
timeout 180 $B/test_kernels_gpu --log_level=message --report_level=short > $L/kernels_gpu.txt 2>&1
echo "test_kernels_gpu rc=$? ($((SECONDS-t0)) s)"; grep -E "^(first|second|wide|split)|error" $L/kernels_gpu.txt | cut -c1-300 | head -12; tail -3 $L/kernels_gpu.txt
bench() {  # name batch extra-args...
  local name=$1 bs=$2; shift 2
  local s=$SECONDS
  timeout 200 mpirun --bind-to none -np 1 $B/vit_hpc configs/benchmark.yaml --set benchmark.enabled=true --set run.device=cuda \
    --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set train.batch_size=$bs --set run.output_dir=results \
    --set run.name=e_$name --set run.progress=false --set benchmark.steps=30 --set benchmark.warmup_steps=5 "$@" > $L/bench_$name.txt 2>&1
  local rc=$?
  echo "$name rc=$rc wall $((SECONDS-s)) s: $(grep -E '^throughput' $L/bench_$name.txt | cut -c1-40) | $(grep -E 'GEMM tuning' $L/bench_$name.txt | sed 's/.*GEMM tuning: //' | cut -c1-260)"
}
C=/tmp/tc/cache.tsv
for bs in 32 256; do
  bench list_nocache_$bs $bs
  bench wide_cold_$bs $bs --set plugin.gemm_autotune_wide=true --set plugin.gemm_tuning_cache=$C
  bench wide_warm_$bs $bs --set plugin.gemm_autotune_wide=true --set plugin.gemm_tuning_cache=$C
  bench list_warm_$bs $bs --set plugin.gemm_tuning_cache=$C
  echo "cache lines: $(grep -vc '^#' $C) ($((SECONDS-t0)) s)"
done
cp $C $L/cache.tsv
echo "done ($((SECONDS-t0)) s)"
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
