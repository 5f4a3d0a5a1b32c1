#!/usr/bin/env bash
# Call D (session 20): the README's table (gpu_machine_checks.sh speed: vit_hpc and its variants, PyTorch eager
# and torch.compile, batch 32 and 256, one H200) on the binaries of 67536e1 (the wgmma backward's last query tile trimmed, the LayerNorm backward summing
# proj's and fc2's bias gradients)
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tar xJf .devcarry70/bins.tar.xz -C .devcarry70 && echo unpacked
t0=$SECONDS; B=.devcarry70/main; D=.devcarry70/data
L=$OUT/logs; mkdir -p $L
rm -rf results/speed_np1; export VIT_GIT_REVISION=67536e1
OUT=$L timeout 570 bash tests/gpu/gpu_machine_checks.sh $B $D speed > $L/table.txt 2>&1
echo "table rc=$? ($((SECONDS-t0)) s)"; grep -E "throughput" $L/table.txt | head -40 | cut -c1-120
cp -r results/speed_np1 $L/ 2>/dev/null
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
