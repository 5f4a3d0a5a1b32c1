#!/usr/bin/env bash
# Call D (session 19): the wgmma attention forward in persistent blocks (binaries of 73d27d6): test_kernels_gpu
# whole, bench_kernels' attention lines at batch 32 / 256, then vit_hpc bf16 at batch 32 and 256, the default
# and +cudnn_attention_forward alternating, three rounds (the first tunes the GEMMs; the others read its cache).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tar xJf .devcarry67/bins.tar.xz -C .devcarry67 && echo unpacked
t0=$SECONDS; B=.devcarry67/main; D=.devcarry67/data
L=$OUT/logs; mkdir -p $L
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error|SKIPPED" $L/kernels_gpu.txt | cut -c1-220 | head -8
grep -E "attention_fwd (out|stats) wgmma" $L/kernels_gpu.txt | head -40
for b in 32 256; do
  timeout 60 $B/bench_kernels --batch $b --dtype bf16 > $L/bench_kernels_bs$b.txt 2>&1
  echo "bench bs$b rc=$?"; grep -E "attention (fwd|bwd cudnn)" $L/bench_kernels_bs$b.txt | head -3
done
for r in 1 2 3; do
  rm -rf results/ab$r; mkdir -p results/ab$r; [ $r -gt 1 ] && cp results/ab1/gemm_tuning.tsv results/ab$r/ 2>/dev/null
  BUILD_DIR=$B timeout 150 bash run_benchmark.sh --no-build --np 1 --precision bf16 \
    --plugins "torch_ddp_fp16 torch_ddp_fp16+cudnn_attention_forward" \
    --batch-sizes "32 256" --steps 30 --warmup 5 --name ab$r > $L/ab$r.txt 2>&1
  echo "round $r rc=$? ($((SECONDS-t0)) s)"; grep -E "^\| throughput" $L/ab$r.txt | head -2
  cp results/ab$r/summary.md $L/ab$r.md 2>/dev/null
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
