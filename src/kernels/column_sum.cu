// Column sums (see column_sum.cuh).
#include <algorithm>

#include "kernels/column_sum.cuh"

namespace vit::kernels::cuda_detail {
namespace {

// The unpacked form (N not a multiple of the pack, or unaligned data, e.g.
// the classifier head's 3 columns): a lane per column, warps over the rows.
template <typename T>
__global__ void column_sum_scalar_kernel(float* __restrict__ partial, const T* __restrict__ x, int64_t M,
                                         int64_t N) {
  __shared__ float acc[kColSumWarps][32];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const int64_t per_split = (M + gridDim.y - 1) / gridDim.y;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * per_split;
  const int64_t r1 = min(M, r0 + per_split);
  float s = 0.0f;
  if (col < N) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kColSumWarps) s += to_f(x[r * N + col]);
  }
  acc[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < N) {
    float t = 0.0f;
#pragma unroll
    for (int i = 0; i < kColSumWarps; ++i) t += acc[i][threadIdx.x];
    partial[static_cast<int64_t>(blockIdx.y) * N + col] = t;
  }
}

// Block (32, 32): 32 adjacent columns (coalesced rows of the partials), 32
// rows of threads split the splits (each issuing its few loads before adding),
// then one thread folds the 32 in a fixed order.
constexpr int kFoldRows = 32;
__global__ void column_sum_fold_kernel(float* __restrict__ dst, const float* __restrict__ partial, int splits,
                                       int64_t N, bool accumulate) {
  __shared__ float acc[kFoldRows][33];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  float s = 0.0f;
  if (c < N) {
    constexpr int kMost = (kColSumMaxSplits + kFoldRows - 1) / kFoldRows;
    float v[kMost];
#pragma unroll
    for (int k = 0; k < kMost; ++k) {
      const int i = threadIdx.y + k * kFoldRows;
      v[k] = i < splits ? partial[static_cast<int64_t>(i) * N + c] : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < kMost; ++k) s += v[k];
  }
  acc[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || c >= N) return;
  float t = 0.0f;
#pragma unroll
  for (int i = 0; i < kFoldRows; ++i) t += acc[i][threadIdx.x];
  dst[c] = (accumulate ? dst[c] : 0.0f) + t;
}

}  // namespace

ColumnSumShape column_sum_shape(int64_t M, int64_t N, int P, int num_sms) {
  ColumnSumShape s;
  const int64_t col_blocks = (N / P + 31) / 32;
  // About 8 blocks of 8 warps an SM in all, at most kColSumMaxSplits partial
  // rows to fold, and at least 4 rows a warp in every split.
  const int64_t target = static_cast<int64_t>(num_sms > 0 ? num_sms : 132) * 8;
  const int64_t most = std::clamp<int64_t>(M / (kColSumWarps * 4), 1, kColSumMaxSplits);
  s.splits = static_cast<int>(std::clamp<int64_t>((target + col_blocks - 1) / col_blocks, 1, most));
  s.grid = dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(s.splits));
  s.block = dim3(32, kColSumWarps);
  return s;
}

void column_sum_fold(cudaStream_t stream, float* dst, const float* partial, int splits, int64_t N, bool accumulate) {
  VIT_CHECK(splits >= 1 && splits <= kColSumMaxSplits, "column_sum_fold: ", splits, " splits, at most ",
            kColSumMaxSplits);
  column_sum_fold_kernel<<<static_cast<unsigned>((N + 31) / 32), dim3(32, kFoldRows), 0, stream>>>(dst, partial, splits, N,
                                                                                          accumulate);
  VIT_CUDA_CHECK_LAUNCH();
}

void column_sum(GpuHandles& h, cudaStream_t stream, float* dst, const void* x, DType dtype, int64_t M, int64_t N,
                bool accumulate) {
  if (N <= 0) return;
  if (M <= 0) {  // no rows: nothing to add, and an assignment is zero
    if (!accumulate) VIT_CUDA_CHECK(cudaMemsetAsync(dst, 0, sizeof(float) * N, stream));
    return;
  }
  VIT_DTYPE_SWITCH(dtype, T, {
    constexpr int P = Pack<T>::N;
    const T* xt = static_cast<const T*>(x);
    if (N % P == 0 && aligned16(x)) {
      const ColumnSumShape s = column_sum_shape(M, N, P, h.num_sms);
      auto* partial = static_cast<float*>(h.scratch_small.get(sizeof(float) * s.splits * N, stream));
      column_sum_rows_kernel<T><<<s.grid, s.block, 0, stream>>>(partial, M, N, ColumnSumRead<T>{xt});
      VIT_CUDA_CHECK_LAUNCH();
      column_sum_fold(stream, dst, partial, s.splits, N, accumulate);
    } else {
      const int splits = static_cast<int>(std::clamp<int64_t>(M / 64, 1, kColSumMaxSplits));
      auto* partial = static_cast<float*>(h.scratch_small.get(sizeof(float) * splits * N, stream));
      dim3 grid(static_cast<unsigned>((N + 31) / 32), static_cast<unsigned>(splits));
      column_sum_scalar_kernel<T><<<grid, dim3(32, kColSumWarps), 0, stream>>>(partial, xt, M, N);
      VIT_CUDA_CHECK_LAUNCH();
      column_sum_fold(stream, dst, partial, splits, N, accumulate);
    }
  });
}

}  // namespace vit::kernels::cuda_detail
