// Column sums (see column_sum.cuh).
#include <algorithm>
#include <cstdint>
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

// The fold of 32 adjacent columns (col0 ..) of f, by a block whose first R
// rows of 32 threads take part (coalesced rows of the partials): thread row
// y adds splits y, y + R, y + 2R, .. in order (4 loads in flight), then row
// 0 adds the R row sums in order. R = 32: the column sums' order; R = 8:
// the LayerNorm parameter gradients'. Every thread of the block calls it.
template <int R>
__device__ __forceinline__ void fold_columns(const PendingFold& f, int64_t col0, float (*acc)[33]) {
  const int x = threadIdx.x, y = threadIdx.y;
  const int64_t c = col0 + x;
  if (y < R) {
    float s = 0.0f;
    if (c < f.N) {
      for (int i0 = y; i0 < f.splits; i0 += 4 * R) {
        float v[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int i = i0 + k * R;
          v[k] = i < f.splits ? f.partial[static_cast<int64_t>(i) * f.N + c] : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) s += v[k];
      }
    }
    acc[y][x] = s;
  }
  __syncthreads();
  if (y != 0 || c >= f.N) return;
  float t = 0.0f;
#pragma unroll
  for (int i = 0; i < R; ++i) t += acc[i][x];
  float* dst = c < f.n1 ? f.dst + c : f.dst2 + (c - f.n1);
  *dst = (f.accumulate ? *dst : 0.0f) + t;  // 0 + t: the bits of adding to a zeroed gradient
}

template <int R>
__global__ void fold_kernel(const PendingFold f) {
  __shared__ float acc[R][33];
  fold_columns<R>(f, static_cast<int64_t>(blockIdx.x) * 32, acc);
}

// Folds recorded while deferred, launched together: block b works on the
// record whose blocks start at or before it.
constexpr int kMaxBatch = 16;
struct FoldBatch {
  int count = 0;
  int first_block[kMaxBatch + 1] = {};
  PendingFold rec[kMaxBatch];
};
__global__ void fold_batch_kernel(const __grid_constant__ FoldBatch batch) {
  __shared__ float acc[32][33];
  int r = 0;
  while (r + 1 < batch.count && static_cast<int>(blockIdx.x) >= batch.first_block[r + 1]) ++r;
  const PendingFold& f = batch.rec[r];
  const int64_t col0 = static_cast<int64_t>(blockIdx.x - batch.first_block[r]) * 32;
  if (f.rows == 8) {
    fold_columns<8>(f, col0, acc);
  } else {
    fold_columns<32>(f, col0, acc);
  }
}

int fold_blocks(int64_t N) { return static_cast<int>((N + 31) / 32); }

// Whether fold w's destinations overlap fold r's partial rows.
bool writes_into(const PendingFold& w, const PendingFold& r) {
  const auto overlaps = [](const float* a, int64_t na, const float* b, int64_t nb) {
    const auto x = reinterpret_cast<std::uintptr_t>(a), y = reinterpret_cast<std::uintptr_t>(b);
    return na > 0 && nb > 0 && x < y + sizeof(float) * nb && y < x + sizeof(float) * na;
  };
  const int64_t read = static_cast<int64_t>(r.splits) * r.N;
  const int64_t n1 = std::min(w.n1, w.N);
  return overlaps(w.dst, n1, r.partial, read) || (w.dst2 && overlaps(w.dst2, w.N - n1, r.partial, read));
}

PendingFold make_fold(float* dst, float* dst2, int64_t n1, const float* partial, int splits, int64_t N, int rows,
                      bool accumulate) {
  return PendingFold{dst, dst2, n1, partial, N, splits, rows, accumulate};
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

namespace {
bool deferring(const GpuHandles& h, cudaStream_t stream) { return h.defer_folds && stream == h.stream; }
}  // namespace

float* fold_partials(GpuHandles& h, cudaStream_t stream, size_t floats) {
  if (!deferring(h, stream)) return static_cast<float*>(h.scratch_small.get(sizeof(float) * floats, stream));
  const size_t bytes = (sizeof(float) * floats + 255) & ~size_t(255);
  if (h.fold_used + bytes > h.fold_arena.capacity()) {
    // Growing frees the old block: the folds that read it go first. The
    // arena then holds what this many pending folds need (the next block's
    // backward asks the same), and stops growing after the first step.
    const size_t want = h.fold_used + bytes;
    fold_flush(h);
    h.fold_arena.get(want, stream);
  }
  auto* p = reinterpret_cast<float*>(static_cast<char*>(h.fold_arena.get(0, stream)) + h.fold_used);
  h.fold_used += bytes;
  return p;
}

void fold_into(GpuHandles& h, cudaStream_t stream, float* dst, float* dst2, int64_t n1, const float* partial,
               int splits, int64_t N, int rows, bool accumulate) {
  VIT_CHECK(splits >= 1, "fold_into: ", splits, " splits");
  VIT_CHECK(rows == 8 || rows == 32, "fold_into: ", rows, " rows of threads (8 or 32)");
  VIT_CHECK(n1 >= N || dst2 != nullptr, "fold_into: columns past ", n1, " need a second destination");
  const PendingFold f = make_fold(dst, dst2, n1, partial, splits, N, rows, accumulate);
  if (!deferring(h, stream)) {
    if (rows == 8) {
      fold_kernel<8><<<static_cast<unsigned>(fold_blocks(N)), dim3(32, 8), 0, stream>>>(f);
    } else {
      fold_kernel<32><<<static_cast<unsigned>(fold_blocks(N)), dim3(32, 32), 0, stream>>>(f);
    }
    VIT_CUDA_CHECK_LAUNCH();
    return;
  }
  // Folds in one launch run at once, so the pending ones go first where
  // order matters: two into one gradient (accumulating), one that writes
  // what a pending one reads (its partial rows), or one that reads what a
  // pending one writes.
  const bool ordered = std::any_of(h.folds.begin(), h.folds.end(), [&](const PendingFold& p) {
    return dst == p.dst || dst == p.dst2 || (dst2 && (dst2 == p.dst || dst2 == p.dst2)) || writes_into(f, p) ||
           writes_into(p, f);
  });
  if (ordered || static_cast<int>(h.folds.size()) == kMaxBatch) fold_flush(h);
  h.folds.push_back(f);
}

void fold_flush(GpuHandles& h) {
  if (h.folds.empty()) {
    h.fold_used = 0;
    return;
  }
  FoldBatch batch;
  batch.count = static_cast<int>(h.folds.size());
  int blocks = 0;
  for (int r = 0; r < batch.count; ++r) {
    batch.first_block[r] = blocks;
    batch.rec[r] = h.folds[static_cast<size_t>(r)];
    blocks += fold_blocks(batch.rec[r].N);
  }
  batch.first_block[batch.count] = blocks;
  h.folds.clear();
  h.fold_used = 0;
  fold_batch_kernel<<<static_cast<unsigned>(blocks), dim3(32, 32), 0, h.stream>>>(batch);
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
      float* partial = fold_partials(h, stream, static_cast<size_t>(splits) * N);
      dim3 grid(static_cast<unsigned>((N + 31) / 32), static_cast<unsigned>(splits));
      column_sum_scalar_kernel<T><<<grid, dim3(32, kScalarWarps), 0, stream>>>(partial, xt, M, N);
      VIT_CUDA_CHECK_LAUNCH();
      fold_into(h, stream, dst, nullptr, N, partial, splits, N, 32, accumulate);
    }
  });
}

}  // namespace vit::kernels::cuda_detail
