#!/usr/bin/env bash
# Call D (session 21): the README's table (gpu_machine_checks.sh speed: vit_hpc and its variants, PyTorch eager
# and torch.compile, batch 32 and 256, one H200) on the binaries of 534b80f (fc2's bias sums in the block's deferred
# folds; fold_into's order checks).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=.devcarry74
tar xJf $C/bins_main.tar.xz -C $C/main && echo unpacked
t0=$SECONDS; B=$C/main; D=$C/data
L=$OUT/logs; mkdir -p $L
rm -rf results/speed_np1; export VIT_GIT_REVISION=534b80f
OUT=$L timeout 370 bash tests/gpu/gpu_machine_checks.sh $B $D speed > $L/table.txt 2>&1
echo "table rc=$? ($((SECONDS-t0)) s)"; grep -E "throughput" $L/table.txt | head -40 | cut -c1-120
cp -r results/speed_np1 $L/ 2>/dev/null
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
