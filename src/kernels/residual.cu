// Residual sums on the GPU (see residual.h): out = a + b, dst += src.
//
// Pure bandwidth: 16-byte packs per thread when sizes and addresses allow,
// fp32 arithmetic, one rounding to the storage type. out may alias a or b:
// each element is read before it is written by the same thread, so the
// kernels take no __restrict__ on those pointers.
#include "kernels/column_sum.h"
#include "kernels/cuda_common.cuh"
#include "kernels/residual.h"

namespace vit::kernels {
namespace {

using namespace cuda_detail;

template <typename T, bool kVec>
__global__ void add_kernel(T* out, const T* a, const T* b, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if constexpr (kVec) {
    constexpr int P = Pack<T>::N;
    for (int64_t i = tid; i < n / P; i += stride) {
      Pack<T> x, y, z;
      x = *reinterpret_cast<const Pack<T>*>(a + i * P);
      y = *reinterpret_cast<const Pack<T>*>(b + i * P);
#pragma unroll
      for (int j = 0; j < P; ++j) z.v[j] = from_f<T>(to_f(x.v[j]) + to_f(y.v[j]));
      store_pack(out + i * P, z);
    }
  } else {
    for (int64_t i = tid; i < n; i += stride) out[i] = from_f<T>(to_f(a[i]) + to_f(b[i]));
  }
}

void launch_add(const Context& ctx, Tensor out, const Tensor& a, const Tensor& b, const char* op) {
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(out, op, "out");
  check_gpu(a, op, "a");
  check_gpu(b, op, "b");
  check_dtype(a, out.dtype, op, "a");
  check_dtype(b, out.dtype, op, "b");
  const int64_t n = out.numel();
  check_numel(a, n, op, "a");
  check_numel(b, n, op, "b");
  cudaStream_t s = stream_of(ctx);
  VIT_DTYPE_SWITCH(out.dtype, T, {
    constexpr int P = Pack<T>::N;
    if (n % P == 0 && aligned16(out.data) && aligned16(a.data) && aligned16(b.data)) {
      add_kernel<T, true><<<grid_for(n / P, 256, h.num_sms), 256, 0, s>>>(out.as<T>(), a.as<T>(), b.as<T>(), n);
    } else {
      add_kernel<T, false><<<grid_for(n, 256, h.num_sms), 256, 0, s>>>(out.as<T>(), a.as<T>(), b.as<T>(), n);
    }
  });
  VIT_CUDA_CHECK_LAUNCH();
}

}  // namespace

namespace cuda {

void residual_add(const Context& ctx, Tensor out, const Tensor& a, const Tensor& b) {
  launch_add(ctx, out, a, b, "residual_add");
}

void accumulate(const Context& ctx, Tensor dst, const Tensor& src) { launch_add(ctx, dst, dst, src, "accumulate"); }

// A fold of one partial row (column_sum.h): immediate, or with the scope's
// deferred folds.
void add_gradient(const Context& ctx, Tensor dst, const Tensor& src, bool accumulate) {
  const char* op = "add_gradient";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(dst, op, "dst");
  check_gpu(src, op, "src");
  check_dtype(dst, DType::F32, op, "dst");
  check_dtype(src, DType::F32, op, "src");
  const int64_t n = dst.numel();
  check_numel(src, n, op, "src");
  if (n == 0) return;
  fold_into(h, stream_of(ctx), dst.f32(), nullptr, n, src.f32(), 1, n, 8, accumulate);
}

}  // namespace cuda
}  // namespace vit::kernels
