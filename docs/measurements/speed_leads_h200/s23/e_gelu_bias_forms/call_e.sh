#!/usr/bin/env bash
# Call E (session 23): the GELU forward with fc1's bias in three forms against the plain pass (gelu_bias_forms.cu,
# built on the build box at 64e5677's src/ with:
#   nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 --expt-relaxed-constexpr -DVIT_WITH_CUDA=1 -I src \
#     gelu_bias_forms.cu -o gelu_bias_forms build/libvit_kernels.a build/libvit_core.a -L/usr/local/cuda/lib64 \
#     -L/usr/local/cuda/lib -lcudnn -lcublasLt -lcublas -lcudart -lopenblas -Xcompiler -fopenmp
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-} NCCL_NVLS_ENABLE=0
timeout 60 .devcarry83/gelu_bias_forms | tee $OUT/gelu_bias_forms.txt
