#!/usr/bin/env bash
# Call A (session 21): binaries of d5122ed (main/) and, in alt/, vit_hpc relinked with 8958f07's vit.cpp (fc2's
# bias sums by a cast/accumulate kernel a block), test_kernels_gpu with a wgmma attention backward whose last
# query tile is one 16-row step too short (must fail), test_model_gpu with fc2's sums in one half (a race; must
# fail). test_kernels_gpu whole (8958f07's fold_warp_slices, add_gradient); the LayerNorm tests again with
# VIT_LN_BWD_COLSUM=regs (the column sums in registers); test_model_gpu; bench_kernels default / regs;
# three alternating rounds: 8958f07's model code, d5122ed, d5122ed with VIT_LN_BWD_COLSUM=regs.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=.devcarry71
tar xJf $C/bins_main.tar.xz -C $C/main && tar xJf $C/bins_alt.tar.xz -C $C/alt && echo unpacked
t0=$SECONDS; B=$C/main; D=$C/data
L=$OUT/logs; mkdir -p $L
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error|SKIPPED" $L/kernels_gpu.txt | cut -c1-220 | head -8
VIT_LN_BWD_COLSUM=regs timeout 60 $B/test_kernels_gpu --run_test='layernorm_*' --report_level=short > $L/kernels_gpu_ln_regs.txt 2>&1
echo "kernels_gpu layernorm_* with regs rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu_ln_regs.txt; grep -E "error" $L/kernels_gpu_ln_regs.txt | cut -c1-220 | head -5
timeout 60 $C/alt/test_kernels_gpu_broken --run_test=attention_sm90a_backward_gives_the_mma_bits --report_level=short > $L/kernels_gpu_broken.txt 2>&1
echo "broken attention build rc=$? (must fail)"; tail -3 $L/kernels_gpu_broken.txt; grep -E "error" $L/kernels_gpu_broken.txt | cut -c1-260 | head -4
timeout 100 $B/test_model_gpu --report_level=short > $L/model_gpu.txt 2>&1
echo "model_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/model_gpu.txt; grep -E "error" $L/model_gpu.txt | cut -c1-220 | head -5
timeout 60 $C/alt/test_model_gpu_broken --run_test=vit_b16 --report_level=short > $L/model_gpu_broken.txt 2>&1
echo "broken model build rc=$? (must fail)"; tail -3 $L/model_gpu_broken.txt; grep -E "error" $L/model_gpu_broken.txt | cut -c1-260 | head -4
for bs in 32 256; do
  for v in default regs; do
    if [ $v = regs ]; then export VIT_LN_BWD_COLSUM=regs; else unset VIT_LN_BWD_COLSUM; fi
    timeout 60 $B/bench_kernels --batch $bs --dtype bf16 > $L/bench_${v}_bs$bs.txt 2>&1
    echo "bench $v bs$bs rc=$?: $(grep -E '^layernorm bwd' $L/bench_${v}_bs$bs.txt | tr -s ' ' | tr '\n' ';')"
  done
done
unset VIT_LN_BWD_COLSUM
mkdir -p results/tune
for r in 1 2 3; do
  for v in old new regs; do
    n=${v}_$r; bd=$B; [ $v = old ] && bd=$C/alt
    rm -rf results/$n; mkdir -p results/$n; cp results/tune/gemm_tuning.tsv results/$n/ 2>/dev/null
    if [ $v = regs ]; then export VIT_LN_BWD_COLSUM=regs; else unset VIT_LN_BWD_COLSUM; fi
    BUILD_DIR=$bd timeout 150 bash run_benchmark.sh --no-build --np 1 --precision bf16 \
      --plugins torch_ddp_fp16 --batch-sizes "32 256" --steps 30 --warmup 5 --name $n > $L/$n.txt 2>&1
    echo "round $r $v rc=$? ($((SECONDS-t0)) s)"; grep -E "^\| throughput" results/$n/summary.md | head -2 | tr '\n' ' '; echo
    [ -f results/tune/gemm_tuning.tsv ] || cp results/$n/gemm_tuning.tsv results/tune/ 2>/dev/null
    cp results/$n/summary.md $L/$n.md 2>/dev/null
  done
done
unset VIT_LN_BWD_COLSUM
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
