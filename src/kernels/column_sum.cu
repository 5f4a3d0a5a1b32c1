// Column sums (see column_sum.cuh).
#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

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
// rows of threads split the splits (each issuing 4 loads before adding them),
// then one thread folds the 32 in a fixed order.
constexpr int kFoldRows = 32;
__global__ void column_sum_fold_kernel(float* __restrict__ dst, const float* __restrict__ partial, int splits,
                                       int64_t N, bool accumulate) {
  __shared__ float acc[kFoldRows][33];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  float s = 0.0f;
  if (c < N) {
    for (int i0 = threadIdx.y; i0 < splits; i0 += 4 * kFoldRows) {
      float v[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int i = i0 + k * kFoldRows;
        v[k] = i < splits ? partial[static_cast<int64_t>(i) * N + c] : 0.0f;
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) s += v[k];
    }
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

int resident_blocks(const void* kernel) {
  int device = 0;
  VIT_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int> known;
  std::lock_guard<std::mutex> lock(mu);
  auto it = known.find({kernel, device});
  if (it != known.end()) return it->second;
  int n = 0;
  VIT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, 32 * kColSumWarps, 0));
  n = std::max(n, 1);
  known[{kernel, device}] = n;
  return n;
}

ColumnSumShape column_sum_shape(int64_t M, int64_t N, int P, int num_sms, int blocks_per_sm) {
  ColumnSumShape s;
  const int64_t col_blocks = (N / P + 31) / 32;
  // One wave, and at least 4 rows a warp in every split.
  const int64_t wave = static_cast<int64_t>(num_sms > 0 ? num_sms : 132) * std::max(blocks_per_sm, 1);
  const int64_t most = std::max<int64_t>(1, M / (kColSumWarps * 4));
  s.splits = static_cast<int>(std::clamp<int64_t>(wave / col_blocks, 1, most));
  s.grid = dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(s.splits));
  s.block = dim3(32, kColSumWarps);
  return s;
}

void column_sum_fold(cudaStream_t stream, float* dst, const float* partial, int splits, int64_t N, bool accumulate) {
  VIT_CHECK(splits >= 1, "column_sum_fold: ", splits, " splits");
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
      column_sum_launch<T>(h, stream, dst, M, N, ColumnSumRead<T>{xt}, accumulate);
    } else {
      const int splits = static_cast<int>(std::clamp<int64_t>(M / 64, 1, 128));
      auto* partial = static_cast<float*>(h.scratch_small.get(sizeof(float) * splits * N, stream));
      dim3 grid(static_cast<unsigned>((N + 31) / 32), static_cast<unsigned>(splits));
      column_sum_scalar_kernel<T><<<grid, dim3(32, kColSumWarps), 0, stream>>>(partial, xt, M, N);
      VIT_CUDA_CHECK_LAUNCH();
      column_sum_fold(stream, dst, partial, splits, N, accumulate);
    }
  });
}

}  // namespace vit::kernels::cuda_detail
