// Column sums on the GPU: the host side (launch shape, fold, the plain
// column sum), for the kernels that fuse a column sum (column_sum.cuh) and
// for benchmarks. CUDA builds only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "kernels/gpu_context.h"

namespace vit::kernels::cuda_detail {

constexpr int kColSumWarps = 8;

struct ColumnSumShape {
  dim3 grid, block;
  int splits = 1;
};

// Blocks of 32 x kColSumWarps threads of `kernel` that fit on one SM of the
// current device at once (asked once per kernel and device).
int resident_blocks(const void* kernel);

// The launch shape for (M rows, N columns) in packs of P elements (N % P ==
// 0): one wave of blocks (blocks_per_sm on each SM, as the kernel's registers
// allow) whose rows are split evenly; a second, nearly empty wave would take
// as long as the first.
ColumnSumShape column_sum_shape(int64_t M, int64_t N, int P, int num_sms, int blocks_per_sm);

// dst[n] (+)= sum over s < splits of partial[s * N + n], s in order; = instead
// of += when !accumulate (0 + sum: the bits of adding to a zeroed gradient).
void column_sum_fold(cudaStream_t stream, float* dst, const float* partial, int splits, int64_t N, bool accumulate);

// dst (N) (+)= the column sums of x (M, N) in the storage type T (any N and
// alignment; packed when they allow it). Scratch from h.scratch_small.
void column_sum(GpuHandles& h, cudaStream_t stream, float* dst, const void* x, DType dtype, int64_t M, int64_t N,
                bool accumulate);

}  // namespace vit::kernels::cuda_detail
