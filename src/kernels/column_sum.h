// Column sums on the GPU: the host side (launch shape, fold, the plain
// column sum), for the kernels that fuse a column sum (column_sum.cuh) and
// for benchmarks. CUDA builds only.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "kernels/gpu_context.h"

namespace vit::kernels::cuda_detail {

constexpr int kColSumThreads = 512;  // threads a block of the rows kernel, at most

struct ColumnSumShape {
  dim3 grid, block;  // grid (column chunks, row groups), block (pack columns, row lanes)
  int groups = 1;    // row groups: partial rows to fold
  size_t smem = 0;   // dynamic shared memory of the rows kernel
};

// The launch shape of `kernel` (a column_sum_rows_kernel) for (M rows, N
// columns) in packs of P elements (N % P == 0): column chunks of about 128
// packs (the row cut in equal chunks) and enough row lanes for ~512 threads;
// as many row groups as one wave of blocks holds (the kernel's occupancy,
// asked once per kernel, device and block shape), but at most M / 32, so
// that the partial rows stay a small fraction of the bytes read.
ColumnSumShape column_sum_shape(int64_t M, int64_t N, int P, int num_sms, const void* kernel);

// dst[n] (+)= sum over s < splits of partial[s * N + n], s in order; = instead
// of += when !accumulate (0 + sum: the bits of adding to a zeroed gradient).
void column_sum_fold(cudaStream_t stream, float* dst, const float* partial, int splits, int64_t N, bool accumulate);

// dst (N) (+)= the column sums of x (M, N) in the storage type T (any N and
// alignment; packed when they allow it). Scratch from h.scratch_small.
void column_sum(GpuHandles& h, cudaStream_t stream, float* dst, const void* x, DType dtype, int64_t M, int64_t N,
                bool accumulate);

}  // namespace vit::kernels::cuda_detail
