// Element-type conversions and fills on the GPU (see cast.h).
//
// Conversions go through fp32 with the CUDA round-to-nearest-even intrinsics
// (__float2bfloat16_rn, __float2half_rn), which agree bit for bit with the
// host conversions in core/dtype.h. Equal dtypes become a device-to-device
// copy on the stream. Both are grid-stride loops over 16-byte packs of the
// destination where sizes and addresses allow.
#include "kernels/cast.h"
#include "kernels/cuda_common.cuh"

namespace vit::kernels {
namespace {

using namespace cuda_detail;

template <typename D, typename S>
__global__ void cast_kernel(D* __restrict__ dst, const S* __restrict__ src, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    dst[i] = from_f<D>(to_f(src[i]));
  }
}

// 8 elements per thread: both sides are whole 16-byte (16-bit types) or
// 32-byte (fp32) chunks.
template <typename D, typename S>
__global__ void cast_kernel_vec8(D* __restrict__ dst, const S* __restrict__ src, int64_t n8) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n8; i += stride) {
    float v[8];
    if constexpr (sizeof(S) == 2) {
      Pack<S> p = load_pack(src + i * 8);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = to_f(p.v[j]);
    } else {
      Pack<S> a = load_pack(src + i * 8), b = load_pack(src + i * 8 + 4);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[j] = to_f(a.v[j]);
        v[j + 4] = to_f(b.v[j]);
      }
    }
    if constexpr (sizeof(D) == 2) {
      Pack<D> p;
#pragma unroll
      for (int j = 0; j < 8; ++j) p.v[j] = from_f<D>(v[j]);
      store_pack(dst + i * 8, p);
    } else {
      Pack<D> a, b;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        a.v[j] = from_f<D>(v[j]);
        b.v[j] = from_f<D>(v[j + 4]);
      }
      store_pack(dst + i * 8, a);
      store_pack(dst + i * 8 + 4, b);
    }
  }
}

template <typename T>
__global__ void fill_kernel(T* __restrict__ x, T value, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) x[i] = value;
}

}  // namespace

namespace cuda {

void cast(const Context& ctx, Tensor dst, const Tensor& src) {
  const char* op = "cast";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(dst, op, "dst");
  check_gpu(src, op, "src");
  const int64_t n = src.numel();
  check_numel(dst, n, op, "dst");
  cudaStream_t s = stream_of(ctx);
  if (n == 0) return;
  if (dst.dtype == src.dtype) {
    VIT_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, src.bytes(), cudaMemcpyDeviceToDevice, s));
    return;
  }
  const bool vec = n % 8 == 0 && aligned16(dst.data) && aligned16(src.data);
  VIT_DTYPE_SWITCH(dst.dtype, D, {
    VIT_DTYPE_SWITCH(src.dtype, S, {
      if (vec) {
        cast_kernel_vec8<D, S><<<grid_for(n / 8, 256, h.num_sms), 256, 0, s>>>(dst.as<D>(), src.as<S>(), n / 8);
      } else {
        cast_kernel<D, S><<<grid_for(n, 256, h.num_sms), 256, 0, s>>>(dst.as<D>(), src.as<S>(), n);
      }
    });
  });
  VIT_CUDA_CHECK_LAUNCH();
}

void fill(const Context& ctx, Tensor x, float value) {
  const char* op = "fill";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(x, op, "x");
  const int64_t n = x.numel();
  if (n == 0) return;
  cudaStream_t s = stream_of(ctx);
  switch (x.dtype) {
    case DType::F32:
      fill_kernel<float><<<grid_for(n, 256, h.num_sms), 256, 0, s>>>(x.as<float>(), value, n);
      break;
    case DType::BF16:
      fill_kernel<bf16><<<grid_for(n, 256, h.num_sms), 256, 0, s>>>(x.as<bf16>(), __float2bfloat16_rn(value), n);
      break;
    case DType::F16:
      fill_kernel<fp16><<<grid_for(n, 256, h.num_sms), 256, 0, s>>>(x.as<fp16>(), __float2half_rn(value), n);
      break;
  }
  VIT_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace vit::kernels
