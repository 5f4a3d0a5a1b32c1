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
// r0 + y + kColSumWarps, ... of its split, kColSumUnroll rows' loads in
// flight at once. Each thread sums in row order, the block folds its warps in
// warp order into one partial row of its split. Pass 2 (column_sum_fold)
// adds the splits' partial rows in split order into the destination. No
// atomics: the order of every sum is fixed by the launch shape, which depends
// only on (M, N) and the GPU's SM count.
//
// The per-element work is an `Op`: op.load(i) issues the loads of the pack at
// element offset i (returns an Op::Loaded), op.apply(loaded, i) finishes it,
// stores what the op writes, and returns the pack whose values (as stored)
// are summed. ColumnSumRead is the plain column sum.
#pragma once

#include "kernels/cuda_common.cuh"

namespace vit::kernels::cuda_detail {

constexpr int kColSumWarps = 8;
constexpr int kColSumUnroll = 4;

struct ColumnSumShape {
  dim3 grid, block;
  int splits = 1;
};

// The launch shape for (M rows, N columns) in packs of P elements (N % P == 0).
ColumnSumShape column_sum_shape(int64_t M, int64_t N, int P, int num_sms);

// dst[n] (+)= sum over s < splits of partial[s * N + n], s in order; = instead
// of += when !accumulate (0 + sum: the bits of adding to a zeroed gradient).
void column_sum_fold(cudaStream_t stream, float* dst, const float* partial, int splits, int64_t N, bool accumulate);

// dst (N) (+)= the column sums of x (M, N) in the storage type T (any N and
// alignment; packed when they allow it). Scratch from h.scratch_small.
void column_sum(GpuHandles& h, cudaStream_t stream, float* dst, const void* x, DType dtype, int64_t M, int64_t N,
                bool accumulate);

template <typename T>
struct ColumnSumRead {
  const T* __restrict__ x;
  using Loaded = Pack<T>;
  __device__ __forceinline__ Loaded load(int64_t i) const { return load_pack(x + i); }
  __device__ __forceinline__ Pack<T> apply(const Loaded& v, int64_t) const { return v; }
};

// partial (gridDim.y, N): row s is the column sums of op's packs over split s.
template <typename T, typename Op>
__global__ void __launch_bounds__(32 * kColSumWarps)
    column_sum_rows_kernel(float* __restrict__ partial, int64_t M, int64_t N, Op op) {
  constexpr int P = Pack<T>::N;
  constexpr int W = kColSumWarps, U = kColSumUnroll;
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
    for (int64_t r = r0 + warp; r < r1; r += W * U) {
      typename Op::Loaded v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t row = r + static_cast<int64_t>(u) * W;
        if (row < r1) v[u] = op.load(row * N + col);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t row = r + static_cast<int64_t>(u) * W;
        if (row < r1) {
          const Pack<T> y = op.apply(v[u], row * N + col);
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

}  // namespace vit::kernels::cuda_detail
