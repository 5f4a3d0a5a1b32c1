// Column sums over the rows of a row-major (M, N) matrix on the GPU, the
// same bits on every run: the bias gradient of a linear layer (the sum of its
// output gradient over the tokens), alone or fused into the kernel that
// makes that gradient (gelu.cu, and attention_short.cu's own).
//
// Why not cuBLASLt's BGRADB epilogue, which sums the bias gradient while the
// weight-gradient GEMM streams the output gradient: with it cuBLASLt's
// heuristic picks slower kernels for the fp32-output weight gradient of every
// ViT-B/16 layer. On an H200 (bench_gemm_algos, 2026-12-01) the four weight
// gradients of a block took 190 us with the epilogue and 143 us without at
// batch 32, 1254 us and 951 us at batch 256, while a column sum reads the
// output gradient once at memory speed (or costs little where it is fused).
//
// Pass 1 (column_sum_rows_kernel): thread (x, y) owns the 16-byte pack
// column blockIdx.x * blockDim.x + x and the rows blockIdx.y * R + y +
// k * gridDim.y * R (R = blockDim.y): neighbouring blocks take the column
// chunks of the same R rows and the next R rows, so at any moment the blocks
// stream neighbouring rows, as an elementwise pass does (contiguous splits
// of rows, each block on a 512-byte piece of its rows, left DRAM at 2.4-3.2
// TB/s). Each thread sums its rows in order with Op::kDepth rows' loads in
// flight, the block folds its R row lanes in order into one partial row.
// Pass 2 (fold_into) adds the partial rows in order into the
// destination. No atomics: the order
// of every sum is fixed by the launch shape, which depends only on (M, N),
// the kernel and the GPU.
//
// The per-element work is an `Op` (with kDepth, the rows of loads a thread
// keeps in flight, and kMinBlocks, the blocks of kColSumThreads an SM must
// fit: a register cap): op.load(i) issues the loads of the pack at element
// offset i (returns an Op::Loaded), op.apply(loaded, i) finishes it, stores
// what the op writes, and returns the pack whose values (as stored) are
// summed. ColumnSumRead is the plain column sum.
#pragma once

#include "kernels/column_sum.h"
#include "kernels/cuda_common.cuh"

namespace vit::kernels::cuda_detail {

template <typename T>
struct ColumnSumRead {
  static constexpr int kDepth = 4;      // rows of loads in flight a thread: nothing else to overlap them with
  static constexpr int kMinBlocks = 2;  // blocks of kColSumThreads an SM (__launch_bounds__): at most 64 registers
  const T* __restrict__ x;
  using Loaded = Pack<T>;
  __device__ __forceinline__ Loaded load(int64_t i) const { return load_pack(x + i); }
  __device__ __forceinline__ Pack<T> apply(const Loaded& v, int64_t) const { return v; }
};

// partial (gridDim.y, N): row g is the column sums of op's packs over the
// rows of row group g (grid (column chunks, row groups)). Dynamic shared
// memory: the fold of the R row lanes, R * blockDim.x * P floats when R > 1.
template <typename T, typename Op>
__global__ void __launch_bounds__(kColSumThreads, Op::kMinBlocks)
    column_sum_rows_kernel(float* __restrict__ partial, int64_t M, int64_t N, Op op) {
  constexpr int P = Pack<T>::N;
  constexpr int D = Op::kDepth;
  extern __shared__ float fold[];
  const int x = threadIdx.x, y = threadIdx.y, R = blockDim.y, X = blockDim.x;
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * X + x) * P;
  const int64_t stride = static_cast<int64_t>(gridDim.y) * R;
  float acc[P];
#pragma unroll
  for (int j = 0; j < P; ++j) acc[j] = 0.0f;
  if (col < N) {
    const int64_t first = static_cast<int64_t>(blockIdx.y) * R + y;
    typename Op::Loaded buf[D];
#pragma unroll
    for (int d = 0; d < D; ++d) {
      const int64_t row = first + d * stride;
      if (row < M) buf[d] = op.load(row * N + col);
    }
    for (int64_t base = first; base < M; base += D * stride) {
#pragma unroll
      for (int d = 0; d < D; ++d) {
        const int64_t row = base + d * stride;
        if (row < M) {
          // The next loads go out before this row's arithmetic.
          const typename Op::Loaded cur = buf[d];
          const int64_t next = row + D * stride;
          if (next < M) buf[d] = op.load(next * N + col);
          const Pack<T> v = op.apply(cur, row * N + col);
#pragma unroll
          for (int j = 0; j < P; ++j) acc[j] += to_f(v.v[j]);
        }
      }
    }
  }
  if (R > 1) {  // row lanes 1.. park their sums, lane 0 adds them in order
    if (y > 0) {
#pragma unroll
      for (int j = 0; j < P; ++j) fold[(static_cast<int64_t>(y) * P + j) * X + x] = acc[j];
    }
    __syncthreads();
    if (y == 0) {
      for (int r = 1; r < R; ++r) {
#pragma unroll
        for (int j = 0; j < P; ++j) acc[j] += fold[(static_cast<int64_t>(r) * P + j) * X + x];
      }
    }
  }
  if (y == 0 && col < N) {
    float* dst = partial + static_cast<int64_t>(blockIdx.y) * N + col;
#pragma unroll
    for (int j = 0; j < P; j += 4) {
      *reinterpret_cast<float4*>(dst + j) = make_float4(acc[j], acc[j + 1], acc[j + 2], acc[j + 3]);
    }
  }
}

// The whole pass for an op: rows kernel (see column_sum_shape), then the fold
// into dst (+= or, !accumulate, =). ShapeOp (default: Op) names the kernel
// whose occupancy sets the row groups, and so the order of the sums: two ops
// that must give the same bits (the GELU backward with and without its
// recompute) launch with one shape, the other kernel then in more waves.
template <typename T, typename Op, typename ShapeOp = Op>
void column_sum_launch(GpuHandles& h, cudaStream_t stream, float* dst, int64_t M, int64_t N, const Op& op,
                       bool accumulate) {
  auto* kern = column_sum_rows_kernel<T, Op>;
  const ColumnSumShape cs = column_sum_shape(M, N, Pack<T>::N, h.num_sms,
                                             reinterpret_cast<const void*>(column_sum_rows_kernel<T, ShapeOp>));
  float* partial = fold_partials(h, stream, static_cast<size_t>(cs.groups) * N);
  kern<<<cs.grid, cs.block, cs.smem, stream>>>(partial, M, N, op);
  VIT_CUDA_CHECK_LAUNCH();
  fold_into(h, stream, dst, nullptr, N, partial, cs.groups, N, 32, accumulate);
}

}  // namespace vit::kernels::cuda_detail
