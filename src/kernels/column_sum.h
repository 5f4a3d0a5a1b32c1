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

// dst (N) (+)= the column sums of x (M, N) in the storage type T (any N and
// alignment; packed when they allow it). Partial rows from fold_partials.
void column_sum(GpuHandles& h, cudaStream_t stream, float* dst, const void* x, DType dtype, int64_t M, int64_t N,
                bool accumulate);

// ---- Folds, now or deferred.
// An op that sums columns in two passes (partial rows, then their fold)
// takes its partial rows from fold_partials and ends with fold_into().
// Normally that is scratch_small and a fold kernel launched at once. While
// folds are deferred (FoldScope, gpu_context.h; on h.stream only), the
// partial rows go to a region of h.fold_arena of their own and the fold is
// recorded; fold_flush launches all recorded folds as one kernel, each with
// the order of sums of its own kernel (the same bits). A model defers the
// folds of a block's backward and flushes before its gradients are handed
// on: one launch a block instead of one per bias or LayerNorm (about 75 a
// ViT-B/16 step). The folds of one launch run at once, so fold_into first
// launches the pending ones when the new fold writes into a pending one's
// destination or partial rows, or reads a pending one's destination: folds
// keep program order among themselves. A kernel that is not a fold and
// writes what a pending fold reads must come after the flush.
//
// Partial rows for `floats` floats: valid until the fold that consumes them.
float* fold_partials(GpuHandles& h, cudaStream_t stream, size_t floats);
// dst[c] (+)= the fold of column c of partial (splits x N) for c < n1, and
// dst2[c - n1] for the columns past n1 (n1 = N and dst2 = nullptr: one
// destination), the splits added in order; = instead of += when !accumulate
// (0 + sum: the bits of adding to a zeroed gradient); rows: 32 (the column
// sums' order) or 8 (the LayerNorm parameter gradients' order).
void fold_into(GpuHandles& h, cudaStream_t stream, float* dst, float* dst2, int64_t n1, const float* partial,
               int splits, int64_t N, int rows, bool accumulate);
// Launches the recorded folds (one kernel; nothing when none).
void fold_flush(GpuHandles& h);

}  // namespace vit::kernels::cuda_detail
