// Drop path and dropout on the GPU (see dropout.h): a grid-stride loop over
// the elements, each thread computing its element's mask from the same
// integer hash as the CPU, so both devices drop exactly the same values.
// The scale is applied in fp32 and rounded once to the tensor's dtype.
#include "kernels/cuda_common.cuh"
#include "kernels/dropout.h"

namespace vit::kernels {
namespace {

using namespace cuda_detail;

// per_element false: drop path (element id 0 for every value of a sample).
template <typename T, bool kPerElement>
__global__ void mask_kernel(T* out, const T* x, int64_t n, int64_t R, float keep_prob, float inv_keep, uint64_t key,
                            int64_t first_sample) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t b = i / R;
    const uint64_t element = kPerElement ? static_cast<uint64_t>(1 + (i - b * R)) : 0ull;
    const bool keep = noise_uniform(key, static_cast<uint64_t>(first_sample + b), element) < keep_prob;
    out[i] = from_f<T>(to_f(x[i]) * (keep ? inv_keep : 0.0f));
  }
}

template <bool kPerElement>
void launch_mask(const Context& ctx, const char* op, Tensor out, const Tensor& x, float keep_prob, uint64_t key,
                 int64_t first_sample) {
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(x, op, "x");
  check_gpu(out, op, "out");
  check_dtype(out, x.dtype, op, "out");
  check_numel(out, x.numel(), op, "out");
  VIT_CHECK(x.ndim >= 2, op, ": x has shape ", x.shape_str(), ", expected (B, ...) with at least 2 dimensions");
  VIT_CHECK(keep_prob > 0.0f && keep_prob <= 1.0f, op, ": keep probability ", keep_prob, " is outside (0, 1]");
  const int64_t n = x.numel();
  if (n == 0) return;
  const int64_t R = n / x.dim(0);
  cudaStream_t s = stream_of(ctx);
  VIT_DTYPE_SWITCH(x.dtype, T, {
    mask_kernel<T, kPerElement><<<grid_for(n, 256, h.num_sms), 256, 0, s>>>(
        out.as<T>(), x.as<T>(), n, R, keep_prob, 1.0f / keep_prob, key, first_sample);
  });
  VIT_CUDA_CHECK_LAUNCH();
}

}  // namespace

namespace cuda {

void drop_path(const Context& ctx, Tensor out, const Tensor& x, float keep_prob, uint64_t key, int64_t first_sample) {
  launch_mask<false>(ctx, "drop_path", out, x, keep_prob, key, first_sample);
}

void dropout(const Context& ctx, Tensor out, const Tensor& x, float keep_prob, uint64_t key, int64_t first_sample) {
  launch_mask<true>(ctx, "dropout", out, x, keep_prob, key, first_sample);
}

}  // namespace cuda
}  // namespace vit::kernels
