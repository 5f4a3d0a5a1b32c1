#!/usr/bin/env bash
# Call A (session 19): the wgmma attention forward (binaries of f9476d2): test_kernels_gpu whole; the same
# suite built with the padded-key mask off by one (keys < T + 1 kept), its forward case alone (must fail);
# bench_kernels' attention lines at batch 32 / 256; vit_hpc bf16 batch 32 / 256, the default beside
# +cudnn_attention_forward, with the op profile.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tar xJf .devcarry65/bins.tar.xz -C .devcarry65 && echo unpacked
t0=$SECONDS; B=.devcarry65/main; D=.devcarry65/data
L=$OUT/logs; mkdir -p $L
timeout 200 $B/test_kernels_gpu --report_level=short > $L/kernels_gpu.txt 2>&1
echo "kernels_gpu rc=$? ($((SECONDS-t0)) s)"; tail -3 $L/kernels_gpu.txt; grep -E "error|SKIPPED" $L/kernels_gpu.txt | cut -c1-220 | head -8
grep -E "attention_fwd (out|stats)" $L/kernels_gpu.txt | head -70
timeout 60 $B/test_kernels_gpu_mask_broken --run_test=attention_sm90a_forward --report_level=short > $L/kernels_gpu_mask_broken.txt 2>&1
echo "mask_broken rc=$? ($((SECONDS-t0)) s)"; tail -2 $L/kernels_gpu_mask_broken.txt; grep -c "error" $L/kernels_gpu_mask_broken.txt
for b in 32 256; do
  timeout 60 $B/bench_kernels --batch $b --dtype bf16 > $L/bench_kernels_bs$b.txt 2>&1
  echo "bench bs$b rc=$?"; grep -E "attention (fwd|bwd cudnn)" $L/bench_kernels_bs$b.txt | head -6
done
rm -rf results/fwd_np1; export VIT_GIT_REVISION=f9476d2
BUILD_DIR=$B timeout 250 bash run_benchmark.sh --no-build --np 1 --precision bf16 \
  --plugins "torch_ddp_fp16 torch_ddp_fp16+cudnn_attention_forward" \
  --batch-sizes "32 256" --steps 30 --warmup 5 --profile --name fwd_np1 > $L/fwd_np1.txt 2>&1
echo "bench rc=$? ($((SECONDS-t0)) s)"; grep -E "throughput|attention_forward|attention_backward |^vit_hpc benchmark" $L/fwd_np1.txt | cut -c1-150 | head -40
cp -r results/fwd_np1 $L/ 2>/dev/null
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
