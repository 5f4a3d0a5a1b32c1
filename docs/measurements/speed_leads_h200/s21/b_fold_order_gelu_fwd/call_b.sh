#!/usr/bin/env bash
# Call B (session 21): binaries of 5930999 (main/; test_kernels_gpu_foldbroken: the same test program with
# fold_into's read/write order checks left out, must fail the new order test). test_kernels_gpu whole; the
# order test on the broken build; the GELU tests with VIT_GELU_FWD_UNROLL=2 and 4; bench_kernels at batch 256
# and 32 with VIT_GELU_FWD_UNROLL unset / 2 / 4; three alternating rounds of the step with the three forms.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=.devcarry72
tar xJf $C/bins_main.tar.xz -C $C/main && echo unpacked
t0=$SECONDS; B=$C/main; D=$C/data
L=$OUT/logs; mkdir -p $L
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error|SKIPPED" $L/kernels_gpu.txt | cut -c1-220 | head -8
for k in 1 2 3; do
  timeout 60 $B/test_kernels_gpu_foldbroken --run_test=deferred_folds_keep_program_order --report_level=short > $L/foldbroken_$k.txt 2>&1
  echo "fold order checks left out, run $k rc=$? (must fail)"; grep -E "error" $L/foldbroken_$k.txt | cut -c1-260 | head -3
done
for u in 2 4; do
  VIT_GELU_FWD_UNROLL=$u timeout 60 $B/test_kernels_gpu --run_test='gelu*' --report_level=short > $L/gelu_u$u.txt 2>&1
  echo "gelu tests with unroll $u rc=$?"; tail -2 $L/gelu_u$u.txt | head -1
done
for bs in 256 32; do
  for u in 1 2 4; do
    VIT_GELU_FWD_UNROLL=$u timeout 60 $B/bench_kernels --batch $bs --dtype bf16 > $L/bench_u${u}_bs$bs.txt 2>&1
    echo "bench unroll $u bs$bs rc=$?: $(grep -E 'gelu fwd' $L/bench_u${u}_bs$bs.txt | tr -s ' ' | tr '\n' ';')"
  done
done
mkdir -p results/tune
for r in 1 2 3; do
  for u in 1 2 4; do
    n=u${u}_$r
    rm -rf results/$n; mkdir -p results/$n; cp results/tune/gemm_tuning.tsv results/$n/ 2>/dev/null
    VIT_GELU_FWD_UNROLL=$u BUILD_DIR=$B timeout 150 bash run_benchmark.sh --no-build --np 1 --precision bf16 \
      --plugins torch_ddp_fp16 --batch-sizes "32 256" --steps 30 --warmup 5 --name $n > $L/$n.txt 2>&1
    echo "round $r unroll $u rc=$? ($((SECONDS-t0)) s)"; grep -E "^\| throughput" results/$n/summary.md | head -2 | tr '\n' ' '; echo
    [ -f results/tune/gemm_tuning.tsv ] || cp results/$n/gemm_tuning.tsv results/tune/ 2>/dev/null
    cp results/$n/summary.md $L/$n.md 2>/dev/null
  done
done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
