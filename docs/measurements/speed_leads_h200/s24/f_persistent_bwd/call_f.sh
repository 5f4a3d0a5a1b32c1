#!/usr/bin/env bash
# Call F (session 24): binaries of d3d825a (the wgmma attention backward persistent, the next (sample, head)'s
# tiles loaded under phase 2 and the bias fold) and of 4ff5093 (old: the same GPU code as main before it).
# test_kernels_gpu's two sm90a attention cases (new); bench_kernels at batch 256 and 32 (attention lines);
# three alternating rounds old / new at batch 32 and 256; one op-profile run each.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=.devcarry84
mkdir -p $C/main $C/old && tar xJf $C/bins_new.tar.xz -C $C/main && tar xJf $C/bins_old.tar.xz -C $C/old && echo unpacked
t0=$SECONDS; B=$C/main; D=$C/data
L=$OUT/logs; mkdir -p $L
timeout 90 $B/test_kernels_gpu --report_level=short \
  --run_test=attention_sm90a_backward_gives_the_mma_bits,attention_sm90a_forward > $L/kernels_gpu_sm90a.txt 2>&1
echo "kernels_gpu sm90a rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu_sm90a.txt; grep -E "error" $L/kernels_gpu_sm90a.txt | cut -c1-220 | head -8
for bs in 256 32; do
  timeout 60 $B/bench_kernels --batch $bs --dtype bf16 > $L/bench_kernels_bs$bs.txt 2>&1
  echo "bench $bs rc=$? ($((SECONDS-t0)) s)"; grep -E "attention bwd" $L/bench_kernels_bs$bs.txt | cut -c14-130 | head -4
done
mkdir -p results
run() {  # run NAME VARIANT [extra args]
  local n=$1 v=$2; shift 2
  local src=$C/main; [ $v = old ] && src=$C/old
  rm -rf $C/b_$v; mkdir -p $C/b_$v; cp $B/vit_results $C/b_$v/; cp $src/vit_hpc $C/b_$v/vit_hpc
  rm -rf results/$n; mkdir -p results/$n; cp $C/tune/gemm_tuning.tsv results/$n/
  BUILD_DIR=$C/b_$v timeout 150 bash run_benchmark.sh --no-build --np 1 --precision bf16 \
    --plugins torch_ddp_fp16 --batch-sizes "32 256" --steps 30 --warmup 5 --name $n "$@" > $L/$n.txt 2>&1
  echo "$n rc=$? ($((SECONDS-t0)) s)"; grep -E "^\| throughput" results/$n/summary.md | head -2 | tr '\n' ' '; echo
  cp results/$n/summary.md $L/$n.md 2>/dev/null
}
for r in 1 2 3; do run old_$r old; run new_$r new; done
run prof_old old --profile; run prof_new new --profile
for v in old new; do grep -E "^\| attention_backward|^\| step, median" $L/prof_$v.md; done
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
