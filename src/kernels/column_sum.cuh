// Column sums over the rows of a row-major (M, N) matrix on the GPU, the
// same bits on every run: the bias gradient of a linear layer (the sum of its
// output gradient over the tokens), alone or fused into the kernel that
// makes that gradient (gelu.cu).
//
// Why not cuBLASLt's BGRADB epilogue, which sums the bias gradient while the
// weight-gradient GEMM streams the output gradient: with it cuBLASLt's
// heuristic picks slower kernels for the fp32-output weight gradient of every
// ViT-B/16 layer. On an H200 (bench_gemm_algos, 2026-12-01) the four weight
// gradients of a block took 190 us with the epilogue and 143 us without at
// batch 32, 1254 us and 951 us at batch 256, while a column sum reads the
// output gradient once at memory speed (or costs nothing where it is fused).
//
// Pass 1 (column_sum_rows_kernel): blocks of (32, kColSumWarps) threads; lane
// x owns the 16-byte pack column blockIdx.x * 32 + x, and the rows are cut
// into gridDim.y contiguous splits, warp y of a block taking rows r0 + y,
// r0 + y + kColSumWarps, ... of its split, Op::kDepth rows' loads in flight. Each thread sums in row order, the block folds its warps in
// warp order into one partial row of its split. Pass 2 (column_sum_fold)
// adds the splits' partial rows in split order into the destination. No
// atomics: the order of every sum is fixed by the launch shape, which depends
// only on (M, N) and the GPU's SM count.
//
// The per-element work is an `Op` (with kDepth, the rows of loads a warp keeps
// in flight, and kMinBlocks, the blocks an SM must fit: a register cap):
// op.load(i) issues the loads of the pack at
// element offset i (returns an Op::Loaded), op.apply(loaded, i) finishes it,
// stores what the op writes, and returns the pack whose values (as stored)
// are summed. ColumnSumRead is the plain column sum.
#pragma once

#include "kernels/column_sum.h"
#include "kernels/cuda_common.cuh"

namespace vit::kernels::cuda_detail {

template <typename T>
struct ColumnSumRead {
  static constexpr int kDepth = 4;  // rows of loads in flight a warp: nothing else to overlap them with
  static constexpr int kMinBlocks = 4;  // blocks an SM (__launch_bounds__): at most 64 registers
  const T* __restrict__ x;
  using Loaded = Pack<T>;
  __device__ __forceinline__ Loaded load(int64_t i) const { return load_pack(x + i); }
  __device__ __forceinline__ Pack<T> apply(const Loaded& v, int64_t) const { return v; }
};

// partial (gridDim.y, N): row s is the column sums of op's packs over split s.
// Each warp keeps Op::kDepth rows' loads in flight: the loads of row
// r + kDepth * kColSumWarps go out before row r's arithmetic, so an op with
// arithmetic (GELU) overlaps it with the loads of the rows after.
template <typename T, typename Op>
__global__ void __launch_bounds__(32 * kColSumWarps, Op::kMinBlocks)
    column_sum_rows_kernel(float* __restrict__ partial, int64_t M, int64_t N, Op op) {
  constexpr int P = Pack<T>::N;
  constexpr int W = kColSumWarps, D = Op::kDepth;
  __shared__ float fold[W][P][32];
  const int lane = threadIdx.x, warp = threadIdx.y;
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * 32 + lane) * P;
  const int64_t per_split = (M + gridDim.y - 1) / gridDim.y;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * per_split;
  const int64_t r1 = min(M, r0 + per_split);
  float acc[P];
#pragma unroll
  for (int j = 0; j < P; ++j) acc[j] = 0.0f;
  if (col < N) {
    typename Op::Loaded buf[D];
#pragma unroll
    for (int d = 0; d < D; ++d) {
      const int64_t row = r0 + warp + static_cast<int64_t>(d) * W;
      if (row < r1) buf[d] = op.load(row * N + col);
    }
    for (int64_t base = r0 + warp; base < r1; base += static_cast<int64_t>(D) * W) {
#pragma unroll
      for (int d = 0; d < D; ++d) {
        const int64_t row = base + static_cast<int64_t>(d) * W;
        if (row < r1) {
          // The next loads go out before this row's arithmetic.
          const typename Op::Loaded cur = buf[d];
          const int64_t next = row + static_cast<int64_t>(D) * W;
          if (next < r1) buf[d] = op.load(next * N + col);
          const Pack<T> y = op.apply(cur, row * N + col);
#pragma unroll
          for (int j = 0; j < P; ++j) acc[j] += to_f(y.v[j]);
        }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < P; ++j) fold[warp][j][lane] = acc[j];
  __syncthreads();
  // Thread t of the block finishes column t of the block's 32 * P (warps in order).
  const int t = warp * 32 + lane;
  if (t < 32 * P) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 * P + t;
    if (c < N) {
      float s = 0.0f;
#pragma unroll
      for (int w = 0; w < W; ++w) s += fold[w][t % P][t / P];
      partial[static_cast<int64_t>(blockIdx.y) * N + c] = s;
    }
  }
}

// The whole pass for an op: rows kernel (one wave of blocks, see
// column_sum_shape), then the fold into dst (+= or, !accumulate, =).
template <typename T, typename Op>
void column_sum_launch(GpuHandles& h, cudaStream_t stream, float* dst, int64_t M, int64_t N, const Op& op,
                       bool accumulate) {
  auto* kern = column_sum_rows_kernel<T, Op>;
  const ColumnSumShape cs =
      column_sum_shape(M, N, Pack<T>::N, h.num_sms, resident_blocks(reinterpret_cast<const void*>(kern)));
  auto* partial = static_cast<float*>(h.scratch_small.get(sizeof(float) * cs.splits * N, stream));
  kern<<<cs.grid, cs.block, 0, stream>>>(partial, M, N, op);
  VIT_CUDA_CHECK_LAUNCH();
  column_sum_fold(stream, dst, partial, cs.splits, N, accumulate);
}

}  // namespace vit::kernels::cuda_detail
