// Reductions and scalar bookkeeping of the optimizer step on the GPU (see
// reduce.h). Nothing here reads a value back to the host: the norm, the
// clipping coefficient and the overflow flag stay in 1-element device
// tensors that AdamW reads directly, so a step never waits on the host.
//
// sum_squares is deterministic (same bits every run): a fixed grid writes
// one fp32 partial per block to the scratch arena, one block then adds the
// partials in a fixed tree order into `out`. No float atomics.
#include "kernels/cuda_common.cuh"
#include "kernels/reduce.h"

namespace vit::kernels {
namespace {

using namespace cuda_detail;

constexpr int kThreads = 256;

__device__ __forceinline__ float block_sum(float v, float* shared /* kThreads / 32 */) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = 0.0f;
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x >> 5) ? shared[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  }
  return v;  // valid in thread 0
}

// partial[block] = this block's sum of x^2; with kFlag, also the
// non-finite test of nonfinite_kernel in the same read of x (flag[0] = 1).
// sum_squares and sum_squares_flag both run this loop, so they add the same
// terms in the same order whether or not the flag is taken.
template <typename T, bool kVec, bool kFlag>
__global__ void sum_squares_partial_kernel(float* __restrict__ partial, float* __restrict__ flag,
                                           const T* __restrict__ x, int64_t n) {
  __shared__ float shared[kThreads / 32];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  float s = 0.0f;
  bool bad = false;
  auto visit = [&](float f) {
    s += f * f;
    if constexpr (kFlag) bad |= !isfinite(f);
  };
  if constexpr (kVec) {
    constexpr int P = Pack<T>::N;
    for (int64_t i = tid; i < n / P; i += stride) {
      Pack<T> v = load_pack(x + i * P);
#pragma unroll
      for (int j = 0; j < P; ++j) visit(to_f(v.v[j]));
    }
  } else {
    for (int64_t i = tid; i < n; i += stride) visit(to_f(x[i]));
  }
  s = block_sum(s, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
  if constexpr (kFlag) {
    // Every writer stores the same value, so concurrent stores are harmless.
    if (__syncthreads_or(bad) && threadIdx.x == 0) flag[0] = 1.0f;
  }
}

__global__ void add_partials_kernel(float* __restrict__ out, const float* __restrict__ partial, int count) {
  __shared__ float shared[kThreads / 32];
  float s = 0.0f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = block_sum(s, shared);
  if (threadIdx.x == 0) out[0] += s;
}

template <typename T>
__global__ void nonfinite_kernel(float* __restrict__ flag, const T* __restrict__ x, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  bool bad = false;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    bad |= !isfinite(to_f(x[i]));
  }
  // Every writer stores the same value, so concurrent stores are harmless.
  if (__syncthreads_or(bad) && threadIdx.x == 0) flag[0] = 1.0f;
}

__global__ void grad_scale_kernel(float* __restrict__ scale, float* __restrict__ norm_out,
                                  const float* __restrict__ sumsq, float max_norm, float inv_loss_scale) {
  const float norm = sqrtf(sumsq[0]) * inv_loss_scale;
  const float clip = max_norm > 0.0f ? fminf(1.0f, max_norm / (norm + 1e-6f)) : 1.0f;
  scale[0] = inv_loss_scale * clip;
  if (norm_out) norm_out[0] = norm;
}

template <typename T>
__global__ void scale_kernel(T* __restrict__ x, float s, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    x[i] = from_f<T>(to_f(x[i]) * s);
  }
}

// A grid that depends only on n (not on timing) keeps the sum's order fixed;
// sum_squares and sum_squares_flag share it, so they add the same terms in
// the same order.
int sum_squares_blocks(int64_t n, int num_sms) {
  return static_cast<int>(
      std::min<int64_t>(std::max<int64_t>(1, (n + 8191) / 8192), static_cast<int64_t>(num_sms) * 4));
}

}  // namespace

namespace cuda {

void sum_squares(const Context& ctx, Tensor out, const Tensor& x) {
  const char* op = "sum_squares";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(out, op, "out");
  check_gpu(x, op, "x");
  check_dtype(out, DType::F32, op, "out");
  check_numel(out, 1, op, "out");
  const int64_t n = x.numel();
  cudaStream_t s = stream_of(ctx);
  const int blocks = sum_squares_blocks(n, h.num_sms);
  auto* partial = static_cast<float*>(h.scratch_small.get(sizeof(float) * blocks, s));
  VIT_DTYPE_SWITCH(x.dtype, T, {
    if (n % Pack<T>::N == 0 && aligned16(x.data)) {
      sum_squares_partial_kernel<T, true, false><<<blocks, kThreads, 0, s>>>(partial, nullptr, x.as<T>(), n);
    } else {
      sum_squares_partial_kernel<T, false, false><<<blocks, kThreads, 0, s>>>(partial, nullptr, x.as<T>(), n);
    }
  });
  VIT_CUDA_CHECK_LAUNCH();
  add_partials_kernel<<<1, kThreads, 0, s>>>(out.f32(), partial, blocks);
  VIT_CUDA_CHECK_LAUNCH();
}

void sum_squares_flag(const Context& ctx, Tensor sumsq, Tensor flag, const Tensor& x, Tensor partial) {
  const char* op = "sum_squares_flag";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(sumsq, op, "sumsq");
  check_gpu(flag, op, "flag");
  check_gpu(x, op, "x");
  check_gpu(partial, op, "partial");
  check_dtype(sumsq, DType::F32, op, "sumsq");
  check_numel(sumsq, 1, op, "sumsq");
  check_dtype(flag, DType::F32, op, "flag");
  check_numel(flag, 1, op, "flag");
  check_dtype(partial, DType::F32, op, "partial");
  const int64_t n = x.numel();
  const int blocks = sum_squares_blocks(n, h.num_sms);
  VIT_CHECK(partial.numel() >= blocks, op, ": partial holds ", partial.numel(), " values, the grid needs ", blocks,
            " (4 x ", h.num_sms, " SMs at most)");
  cudaStream_t s = stream_of(ctx);
  VIT_DTYPE_SWITCH(x.dtype, T, {
    if (n % Pack<T>::N == 0 && aligned16(x.data)) {
      sum_squares_partial_kernel<T, true, true><<<blocks, kThreads, 0, s>>>(partial.f32(), flag.f32(), x.as<T>(), n);
    } else {
      sum_squares_partial_kernel<T, false, true><<<blocks, kThreads, 0, s>>>(partial.f32(), flag.f32(), x.as<T>(), n);
    }
  });
  VIT_CUDA_CHECK_LAUNCH();
  add_partials_kernel<<<1, kThreads, 0, s>>>(sumsq.f32(), partial.f32(), blocks);
  VIT_CUDA_CHECK_LAUNCH();
}

void nonfinite_flag(const Context& ctx, Tensor flag, const Tensor& x) {
  const char* op = "nonfinite_flag";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(flag, op, "flag");
  check_gpu(x, op, "x");
  check_dtype(flag, DType::F32, op, "flag");
  check_numel(flag, 1, op, "flag");
  const int64_t n = x.numel();
  if (n == 0) return;
  cudaStream_t s = stream_of(ctx);
  VIT_DTYPE_SWITCH(x.dtype, T,
                   nonfinite_kernel<T><<<grid_for(n, kThreads, h.num_sms), kThreads, 0, s>>>(flag.f32(),
                                                                                             x.as<T>(), n));
  VIT_CUDA_CHECK_LAUNCH();
}

void grad_scale_from_norm(const Context& ctx, Tensor scale, Tensor norm_out, const Tensor& sumsq, float max_norm,
                          float inv_loss_scale) {
  const char* op = "grad_scale_from_norm";
  gpu_of(ctx, op);
  check_gpu(scale, op, "scale");
  check_gpu(sumsq, op, "sumsq");
  check_dtype(scale, DType::F32, op, "scale");
  check_dtype(sumsq, DType::F32, op, "sumsq");
  float* norm_ptr = nullptr;
  if (norm_out.defined()) {
    check_gpu(norm_out, op, "norm_out");
    check_dtype(norm_out, DType::F32, op, "norm_out");
    norm_ptr = norm_out.f32();
  }
  grad_scale_kernel<<<1, 1, 0, stream_of(ctx)>>>(scale.f32(), norm_ptr, sumsq.f32(), max_norm, inv_loss_scale);
  VIT_CUDA_CHECK_LAUNCH();
}

void scale_inplace(const Context& ctx, Tensor x, float s) {
  const char* op = "scale_inplace";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(x, op, "x");
  const int64_t n = x.numel();
  if (n == 0) return;
  cudaStream_t st = stream_of(ctx);
  VIT_DTYPE_SWITCH(x.dtype, T,
                   scale_kernel<T><<<grid_for(n, kThreads, h.num_sms), kThreads, 0, st>>>(x.as<T>(), s, n));
  VIT_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace vit::kernels
