// Column sums (see column_sum.cuh).
#include <algorithm>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "kernels/column_sum.cuh"

namespace vit::kernels::cuda_detail {
namespace {

constexpr int kScalarWarps = 8;  // row lanes of the unpacked kernel

// The unpacked form (N not a multiple of the pack, or unaligned data, e.g.
// the classifier head's 3 columns): a lane per column, warps over the rows.
template <typename T>
__global__ void column_sum_scalar_kernel(float* __restrict__ partial, const T* __restrict__ x, int64_t M,
                                         int64_t N) {
  __shared__ float acc[kScalarWarps][32];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const int64_t per_split = (M + gridDim.y - 1) / gridDim.y;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * per_split;
  const int64_t r1 = min(M, r0 + per_split);
  float s = 0.0f;
  if (col < N) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kScalarWarps) s += to_f(x[r * N + col]);
  }
  acc[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < N) {
    float t = 0.0f;
#pragma unroll
    for (int i = 0; i < kScalarWarps; ++i) t += acc[i][threadIdx.x];
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

ColumnSumShape column_sum_shape(int64_t M, int64_t N, int P, int num_sms, const void* kernel) {
  ColumnSumShape s;
  // Chunks of about 128 pack columns (a multiple of 32 threads), the row
  // split in equal chunks where it can be: blocks of 4-5 rows of ~2 KB each,
  // 512 threads or a little less (2 blocks an SM at 64 registers), the
  // chunks of a row in neighbouring blocks.
  const int64_t packs = N / P;
  const int64_t parts = (packs + 127) / 128;
  const int x = static_cast<int>(((packs + parts - 1) / parts + 31) / 32 * 32);
  const int chunks = static_cast<int>((packs + x - 1) / x);
  const int rows = std::max(1, kColSumThreads / x);
  s.block = dim3(static_cast<unsigned>(x), static_cast<unsigned>(rows));
  s.smem = rows > 1 ? sizeof(float) * static_cast<size_t>(rows) * x * P : 0;
  // Blocks an SM holds at once (the kernel's registers and shared memory),
  // asked once per (kernel, device, block shape).
  int device = 0;
  VIT_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, int, int>, int> known;
  int per_sm = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    const auto key = std::make_tuple(kernel, device, x * rows, static_cast<int>(s.smem));
    auto it = known.find(key);
    if (it == known.end()) {
      VIT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, x * rows, s.smem));
      it = known.emplace(key, std::max(per_sm, 1)).first;
    }
    per_sm = it->second;
  }
  const int64_t wave = static_cast<int64_t>(num_sms > 0 ? num_sms : 132) * per_sm / chunks;
  s.groups = static_cast<int>(std::clamp<int64_t>(std::min<int64_t>(wave, M / 32), 1, 65535));  // grid.y
  s.grid = dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(s.groups));
  return s;
}

void column_sum_fold(cudaStream_t stream, float* dst, const float* partial, int splits, int64_t N, bool accumulate) {
  VIT_CHECK(splits >= 1, "column_sum_fold: ", splits, " splits");
  column_sum_fold_kernel<<<static_cast<unsigned>((N + 31) / 32), dim3(32, kFoldRows), 0, stream>>>(
      dst, partial, splits, N, accumulate);
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
      column_sum_scalar_kernel<T><<<grid, dim3(32, kScalarWarps), 0, stream>>>(partial, xt, M, N);
      VIT_CUDA_CHECK_LAUNCH();
      column_sum_fold(stream, dst, partial, splits, N, accumulate);
    }
  });
}

}  // namespace vit::kernels::cuda_detail
