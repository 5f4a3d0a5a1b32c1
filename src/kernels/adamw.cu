// AdamW on flat fp32 buffers on the GPU (see adamw.h).
//
// One pass: each element's param, m, v and grad are read once and param, m,
// v (and the compute-dtype copy param_lowp, when given) written once, so the
// update of ViT-B/16's 86M parameters moves about 1.7 GB (fp32 + bf16 copy).
// grad_scale and skip are read from device memory by every thread (one
// cached load each), never by the host: the step stays asynchronous and
// capturable. The bias corrections depend only on the host-side step count,
// so they are computed once on the host and passed by value.
#include <cmath>

#include "kernels/adamw.h"
#include "kernels/cuda_common.cuh"

namespace vit::kernels {
namespace {

using namespace cuda_detail;

struct AdamWArgs {
  float lr, beta1, beta2, eps, decay_factor;  // decay_factor = 1 - lr * weight_decay
  float inv_bc1, inv_sqrt_bc2;                // 1 / (1 - beta1^t), 1 / sqrt(1 - beta2^t)
};

template <typename L, bool kVec>
__global__ void adamw_kernel(float* __restrict__ param, float* __restrict__ m, float* __restrict__ v,
                             const float* __restrict__ grad, L* __restrict__ lowp, const float* __restrict__ scale_ptr,
                             const float* __restrict__ skip_ptr, int64_t n, AdamWArgs a) {
  if (skip_ptr && *skip_ptr != 0.0f) return;
  const float gs = scale_ptr ? *scale_ptr : 1.0f;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  auto update = [&](float& p, float& mm, float& vv, float g) {
    g *= gs;
    mm = a.beta1 * mm + (1.0f - a.beta1) * g;
    vv = a.beta2 * vv + (1.0f - a.beta2) * g * g;
    p *= a.decay_factor;
    p -= a.lr * (mm * a.inv_bc1) / (sqrtf(vv) * a.inv_sqrt_bc2 + a.eps);
  };
  if constexpr (kVec) {
    for (int64_t i = tid; i < n / 4; i += stride) {
      float4 p = reinterpret_cast<float4*>(param)[i];
      float4 mm = reinterpret_cast<float4*>(m)[i];
      float4 vv = reinterpret_cast<float4*>(v)[i];
      const float4 g = __ldg(reinterpret_cast<const float4*>(grad) + i);
      update(p.x, mm.x, vv.x, g.x);
      update(p.y, mm.y, vv.y, g.y);
      update(p.z, mm.z, vv.z, g.z);
      update(p.w, mm.w, vv.w, g.w);
      reinterpret_cast<float4*>(param)[i] = p;
      reinterpret_cast<float4*>(m)[i] = mm;
      reinterpret_cast<float4*>(v)[i] = vv;
      if (lowp) {
        lowp[4 * i + 0] = from_f<L>(p.x);
        lowp[4 * i + 1] = from_f<L>(p.y);
        lowp[4 * i + 2] = from_f<L>(p.z);
        lowp[4 * i + 3] = from_f<L>(p.w);
      }
    }
  } else {
    for (int64_t i = tid; i < n; i += stride) {
      float p = param[i], mm = m[i], vv = v[i];
      update(p, mm, vv, grad[i]);
      param[i] = p;
      m[i] = mm;
      v[i] = vv;
      if (lowp) lowp[i] = from_f<L>(p);
    }
  }
}

}  // namespace

namespace cuda {

void adamw_update(const Context& ctx, Tensor param, Tensor m, Tensor v, const Tensor& grad, Tensor param_lowp,
                  const AdamWHyper& hp, const Tensor& grad_scale, const Tensor& skip) {
  const char* op = "adamw_update";
  GpuHandles& h = gpu_of(ctx, op);
  const int64_t n = param.numel();
  for (const Tensor* t : std::initializer_list<const Tensor*>{&param, &m, &v, &grad}) {
    check_gpu(*t, op, "param/m/v/grad");
    check_dtype(*t, DType::F32, op, "param/m/v/grad");
    check_numel(*t, n, op, "param/m/v/grad");
  }
  const float* scale_ptr = nullptr;
  const float* skip_ptr = nullptr;
  if (grad_scale.defined()) {
    check_gpu(grad_scale, op, "grad_scale");
    check_dtype(grad_scale, DType::F32, op, "grad_scale");
    scale_ptr = grad_scale.f32();
  }
  if (skip.defined()) {
    check_gpu(skip, op, "skip");
    check_dtype(skip, DType::F32, op, "skip");
    skip_ptr = skip.f32();
  }
  if (param_lowp.defined()) {
    check_gpu(param_lowp, op, "param_lowp");
    check_numel(param_lowp, n, op, "param_lowp");
  }
  VIT_CHECK(hp.step >= 1, op, ": step is 1-based, got ", hp.step);
  if (n == 0) return;
  AdamWArgs a;
  a.lr = hp.lr;
  a.beta1 = hp.beta1;
  a.beta2 = hp.beta2;
  a.eps = hp.eps;
  a.decay_factor = 1.0f - hp.lr * hp.weight_decay;
  a.inv_bc1 = static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(hp.beta1), static_cast<double>(hp.step))));
  a.inv_sqrt_bc2 = static_cast<float>(
      1.0 / std::sqrt(1.0 - std::pow(static_cast<double>(hp.beta2), static_cast<double>(hp.step))));
  cudaStream_t s = stream_of(ctx);
  const bool vec = n % 4 == 0 && aligned16(param.data) && aligned16(m.data) && aligned16(v.data) &&
                   aligned16(grad.data);
  const DType lowp_type = param_lowp.defined() ? param_lowp.dtype : DType::F32;
  VIT_DTYPE_SWITCH(lowp_type, L, {
    L* lowp = param_lowp.defined() ? param_lowp.as<L>() : nullptr;
    if (vec) {
      adamw_kernel<L, true><<<grid_for(n / 4, 256, h.num_sms), 256, 0, s>>>(
          param.f32(), m.f32(), v.f32(), grad.f32(), lowp, scale_ptr, skip_ptr, n, a);
    } else {
      adamw_kernel<L, false><<<grid_for(n, 256, h.num_sms), 256, 0, s>>>(
          param.f32(), m.f32(), v.f32(), grad.f32(), lowp, scale_ptr, skip_ptr, n, a);
    }
  });
  VIT_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace vit::kernels
