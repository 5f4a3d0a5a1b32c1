// Weight averaging on the CPU (see ema.h).
#include "kernels/ema.h"

#include <utility>

#include "kernels/cpu_checks.h"

namespace vit::kernels::cpu {

using detail::require_f32;
using detail::require_numel;

void ema_update(const Context&, Tensor ema, const Tensor& param, float decay, const Tensor& skip) {
  const char* op = "ema_update";
  require_f32(op, "ema", ema);
  require_f32(op, "param", param);
  const int64_t n = ema.numel();
  require_numel(op, "param", param, n, "ema's element count");
  if (!(decay >= 0.0f && decay <= 1.0f)) VIT_THROW(op, ": decay ", decay, " is outside [0, 1]");
  if (skip.defined()) {
    require_f32(op, "skip", skip);
    require_numel(op, "skip", skip, 1, "a single flag");
    if (skip.f32()[0] != 0.0f) return;
  }
  float* e = ema.f32();
  const float* p = param.f32();
  const float rate = 1.0f - decay;
#pragma omp parallel for simd schedule(static) if (n > detail::kParallelMin)
  for (int64_t i = 0; i < n; ++i) e[i] += rate * (p[i] - e[i]);
}

void swap_values(const Context&, Tensor a, Tensor b) {
  const char* op = "swap_values";
  require_f32(op, "a", a);
  require_f32(op, "b", b);
  const int64_t n = a.numel();
  require_numel(op, "b", b, n, "a's element count");
  float* x = a.f32();
  float* y = b.f32();
#pragma omp parallel for simd schedule(static) if (n > detail::kParallelMin)
  for (int64_t i = 0; i < n; ++i) std::swap(x[i], y[i]);
}

}  // namespace vit::kernels::cpu
