// AdamW on the CPU over flat fp32 buffers (torch.optim.AdamW semantics).
//
// The bias corrections are scalars of the step, computed once in double;
// the element loop is then torch's sequence in fp32:
//   p *= 1 - lr wd;  p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
// grad_scale and skip are 1-element host tensors read once, so a step that
// must be skipped (fp16 overflow) touches nothing, param_lowp included.
// param_lowp may be any dtype: with Gemini's CPU offload the master copy and
// the Adam states live in host memory while the compute copy that forward
// reads is bf16 or fp16; the cast happens in the same pass as the update.
// One pass over param, m, v, grad (and param_lowp), split over threads.
#include "kernels/adamw.h"

#include <cmath>
#include <type_traits>

#include "kernels/cpu_checks.h"

namespace vit::kernels::cpu {

using detail::require_cpu;
using detail::require_f32;
using detail::require_numel;

namespace {

inline void store(float* dst, float x) { *dst = x; }
inline void store(bf16_t* dst, float x) { *dst = float_to_bf16(x); }
inline void store(f16_t* dst, float x) { *dst = float_to_f16(x); }

struct Coeffs {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, decay, step_size, inv_sqrt_bc2, eps, grad_scale;
};

// LowT: the element type of param_lowp, or void when there is none.
template <typename LowT>
void update(int64_t n, float* p, float* m, float* v, const float* g, LowT* low, const Coeffs& k) {
#pragma omp parallel for simd schedule(static) if (n > detail::kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * k.grad_scale;
    const float mi = k.beta1 * m[i] + k.one_minus_beta1 * gi;
    const float vi = k.beta2 * v[i] + k.one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float pi = p[i] * k.decay;
    pi -= k.step_size * mi / (std::sqrt(vi) * k.inv_sqrt_bc2 + k.eps);
    p[i] = pi;
    if constexpr (!std::is_void_v<LowT>) store(low + i, pi);
  }
}

}  // namespace

void adamw_update(const Context&, Tensor param, Tensor m, Tensor v, const Tensor& grad, Tensor param_lowp,
                  const AdamWHyper& hp, const Tensor& grad_scale, const Tensor& skip) {
  const char* op = "adamw_update";
  require_f32(op, "param", param);
  const int64_t n = param.numel();
  require_f32(op, "m", m);
  require_numel(op, "m", m, n, "param's element count");
  require_f32(op, "v", v);
  require_numel(op, "v", v, n, "param's element count");
  require_f32(op, "grad", grad);
  require_numel(op, "grad", grad, n, "param's element count");
  if (param_lowp.defined()) {
    require_cpu(op, "param_lowp", param_lowp);
    require_numel(op, "param_lowp", param_lowp, n, "param's element count");
  }
  if (grad_scale.defined()) {
    require_f32(op, "grad_scale", grad_scale);
    require_numel(op, "grad_scale", grad_scale, 1, "a single scale");
  }
  if (skip.defined()) {
    require_f32(op, "skip", skip);
    require_numel(op, "skip", skip, 1, "a single flag");
  }
  VIT_CHECK(hp.step >= 1, op, ": step is 1-based, got ", hp.step);
  VIT_CHECK(hp.beta1 >= 0.0f && hp.beta1 < 1.0f && hp.beta2 >= 0.0f && hp.beta2 < 1.0f, op,
            ": betas must lie in [0, 1), got ", hp.beta1, ", ", hp.beta2);
  VIT_CHECK(hp.eps > 0.0f, op, ": eps must be > 0, got ", hp.eps);
  VIT_CHECK(hp.lr >= 0.0f && hp.weight_decay >= 0.0f, op, ": lr and weight_decay must be >= 0, got ", hp.lr, ", ",
            hp.weight_decay);

  if (skip.defined() && skip.f32()[0] != 0.0f) return;

  const double bc1 = 1.0 - std::pow(static_cast<double>(hp.beta1), static_cast<double>(hp.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(hp.beta2), static_cast<double>(hp.step));
  Coeffs k{};
  k.beta1 = hp.beta1;
  k.beta2 = hp.beta2;
  k.one_minus_beta1 = 1.0f - hp.beta1;
  k.one_minus_beta2 = 1.0f - hp.beta2;
  k.decay = 1.0f - hp.lr * hp.weight_decay;
  k.step_size = static_cast<float>(hp.lr / bc1);
  k.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  k.eps = hp.eps;
  k.grad_scale = grad_scale.defined() ? grad_scale.f32()[0] : 1.0f;

  float* p = param.f32();
  if (!param_lowp.defined()) {
    update<void>(n, p, m.f32(), v.f32(), grad.f32(), nullptr, k);
    return;
  }
  switch (param_lowp.dtype) {
    case DType::F32: update(n, p, m.f32(), v.f32(), grad.f32(), param_lowp.as<float>(), k); break;
    case DType::BF16: update(n, p, m.f32(), v.f32(), grad.f32(), param_lowp.as<bf16_t>(), k); break;
    case DType::F16: update(n, p, m.f32(), v.f32(), grad.f32(), param_lowp.as<f16_t>(), k); break;
  }
}

}  // namespace vit::kernels::cpu
