// Exact (erf) GELU on the GPU, forward and backward (see gelu.h).
//
// Memory-bound: one read and one write per element forward, two reads and a
// write backward. Each thread moves 16-byte packs when the tensors allow it
// (element count a multiple of the pack, 16-byte aligned addresses), the
// arithmetic is in fp32 whatever the storage type.
//   gelu(x)  = 0.5 x (1 + erf(x / sqrt 2))
//   gelu'(x) = 0.5 (1 + erf(x / sqrt 2)) + x * exp(-x^2 / 2) / sqrt(2 pi)
#include "kernels/cuda_common.cuh"
#include "kernels/gelu.h"

namespace vit::kernels {
namespace {

using namespace cuda_detail;

__device__ __forceinline__ float gelu_f(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_grad_f(float x) {
  const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
  const float pdf = 0.39894228040143268f * __expf(-0.5f * x * x);
  return cdf + x * pdf;
}

template <typename T, bool kVec>
__global__ void gelu_forward_kernel(T* __restrict__ out, const T* __restrict__ inp, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if constexpr (kVec) {
    constexpr int P = Pack<T>::N;
    for (int64_t i = tid; i < n / P; i += stride) {
      Pack<T> x = load_pack(inp + i * P);
      Pack<T> y;
#pragma unroll
      for (int j = 0; j < P; ++j) y.v[j] = from_f<T>(gelu_f(to_f(x.v[j])));
      store_pack(out + i * P, y);
    }
  } else {
    for (int64_t i = tid; i < n; i += stride) out[i] = from_f<T>(gelu_f(to_f(inp[i])));
  }
}

template <typename T, bool kVec>
__global__ void gelu_backward_kernel(T* __restrict__ dinp, const T* __restrict__ inp, const T* __restrict__ dout,
                                     int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if constexpr (kVec) {
    constexpr int P = Pack<T>::N;
    for (int64_t i = tid; i < n / P; i += stride) {
      Pack<T> x = load_pack(inp + i * P);
      Pack<T> g = load_pack(dout + i * P);
      Pack<T> y;
#pragma unroll
      for (int j = 0; j < P; ++j) y.v[j] = from_f<T>(to_f(g.v[j]) * gelu_grad_f(to_f(x.v[j])));
      store_pack(dinp + i * P, y);
    }
  } else {
    for (int64_t i = tid; i < n; i += stride) dinp[i] = from_f<T>(to_f(dout[i]) * gelu_grad_f(to_f(inp[i])));
  }
}

}  // namespace

namespace cuda {

void gelu_forward(const Context& ctx, Tensor out, const Tensor& inp) {
  const char* op = "gelu_forward";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(out, op, "out");
  check_gpu(inp, op, "inp");
  check_dtype(out, inp.dtype, op, "out");
  const int64_t n = inp.numel();
  check_numel(out, n, op, "out");
  cudaStream_t s = stream_of(ctx);
  VIT_DTYPE_SWITCH(inp.dtype, T, {
    constexpr int P = Pack<T>::N;
    if (n % P == 0 && aligned16(out.data) && aligned16(inp.data)) {
      gelu_forward_kernel<T, true><<<grid_for(n / P, 256, h.num_sms), 256, 0, s>>>(out.as<T>(), inp.as<T>(), n);
    } else {
      gelu_forward_kernel<T, false><<<grid_for(n, 256, h.num_sms), 256, 0, s>>>(out.as<T>(), inp.as<T>(), n);
    }
  });
  VIT_CUDA_CHECK_LAUNCH();
}

void gelu_backward(const Context& ctx, Tensor dinp, const Tensor& inp, const Tensor& dout) {
  const char* op = "gelu_backward";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(dinp, op, "dinp");
  check_gpu(inp, op, "inp");
  check_gpu(dout, op, "dout");
  check_dtype(dinp, inp.dtype, op, "dinp");
  check_dtype(dout, inp.dtype, op, "dout");
  const int64_t n = inp.numel();
  check_numel(dinp, n, op, "dinp");
  check_numel(dout, n, op, "dout");
  cudaStream_t s = stream_of(ctx);
  VIT_DTYPE_SWITCH(inp.dtype, T, {
    constexpr int P = Pack<T>::N;
    if (n % P == 0 && aligned16(dinp.data) && aligned16(inp.data) && aligned16(dout.data)) {
      gelu_backward_kernel<T, true>
          <<<grid_for(n / P, 256, h.num_sms), 256, 0, s>>>(dinp.as<T>(), inp.as<T>(), dout.as<T>(), n);
    } else {
      gelu_backward_kernel<T, false>
          <<<grid_for(n, 256, h.num_sms), 256, 0, s>>>(dinp.as<T>(), inp.as<T>(), dout.as<T>(), n);
    }
  });
  VIT_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace vit::kernels
