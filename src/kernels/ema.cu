// Weight averaging on the GPU (see ema.h): grid-stride loops; the skip flag
// is read on the device so the step stays free of host synchronisation.
#include "kernels/cuda_common.cuh"
#include "kernels/ema.h"

namespace vit::kernels {
namespace {

using namespace cuda_detail;

__global__ void ema_kernel(float* __restrict__ ema, const float* __restrict__ param, int64_t n, float rate,
                           const float* __restrict__ skip) {
  if (skip && *skip != 0.0f) return;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float e = ema[i];
    ema[i] = e + rate * (param[i] - e);
  }
}

__global__ void swap_kernel(float* __restrict__ a, float* __restrict__ b, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float t = a[i];
    a[i] = b[i];
    b[i] = t;
  }
}

}  // namespace

namespace cuda {

void ema_update(const Context& ctx, Tensor ema, const Tensor& param, float decay, const Tensor& skip) {
  const char* op = "ema_update";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(ema, op, "ema");
  check_gpu(param, op, "param");
  check_dtype(ema, DType::F32, op, "ema");
  check_dtype(param, DType::F32, op, "param");
  const int64_t n = ema.numel();
  check_numel(param, n, op, "param");
  VIT_CHECK(decay >= 0.0f && decay <= 1.0f, op, ": decay ", decay, " is outside [0, 1]");
  const float* skip_ptr = nullptr;
  if (skip.defined()) {
    check_gpu(skip, op, "skip");
    check_dtype(skip, DType::F32, op, "skip");
    skip_ptr = skip.f32();
  }
  if (n == 0) return;
  ema_kernel<<<grid_for(n, 256, h.num_sms), 256, 0, stream_of(ctx)>>>(ema.f32(), param.f32(), n, 1.0f - decay,
                                                                      skip_ptr);
  VIT_CUDA_CHECK_LAUNCH();
}

void swap_values(const Context& ctx, Tensor a, Tensor b) {
  const char* op = "swap_values";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(a, op, "a");
  check_gpu(b, op, "b");
  check_dtype(a, DType::F32, op, "a");
  check_dtype(b, DType::F32, op, "b");
  const int64_t n = a.numel();
  check_numel(b, n, op, "b");
  if (n == 0) return;
  swap_kernel<<<grid_for(n, 256, h.num_sms), 256, 0, stream_of(ctx)>>>(a.f32(), b.f32(), n);
  VIT_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace vit::kernels
