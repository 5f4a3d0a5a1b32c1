// Element-wise sums of the residual stream on the CPU.
//
// Plain loops the compiler vectorises, split over threads when long enough.
// residual_add allows out to alias a or b (each element is read before it is
// written, at the same index).
#include "kernels/residual.h"

#include "kernels/cpu_checks.h"

namespace vit::kernels::cpu {

using detail::require_f32;
using detail::require_numel;

void residual_add(const Context&, Tensor out, const Tensor& a, const Tensor& b) {
  const char* op = "residual_add";
  require_f32(op, "out", out);
  require_f32(op, "a", a);
  require_f32(op, "b", b);
  require_numel(op, "a", a, out.numel(), "out's element count");
  require_numel(op, "b", b, out.numel(), "out's element count");
  const int64_t n = out.numel();
  const float* pa = a.f32();
  const float* pb = b.f32();
  float* po = out.f32();
#pragma omp parallel for simd schedule(static) if (n > detail::kParallelMin)
  for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pb[i];
}

namespace {
// dst (+)= src: dst + src, or 0 + src when !accumulate.
void add_into(const char* op, Tensor dst, const Tensor& src, bool accumulate) {
  require_f32(op, "dst", dst);
  require_f32(op, "src", src);
  require_numel(op, "src", src, dst.numel(), "dst's element count");
  const int64_t n = dst.numel();
  const float* s = src.f32();
  float* d = dst.f32();
#pragma omp parallel for simd schedule(static) if (n > detail::kParallelMin)
  for (int64_t i = 0; i < n; ++i) d[i] = (accumulate ? d[i] : 0.0f) + s[i];
}
}  // namespace

void accumulate(const Context&, Tensor dst, const Tensor& src) { add_into("accumulate", dst, src, true); }

void add_gradient(const Context&, Tensor dst, const Tensor& src, bool accumulate) {
  add_into("add_gradient", dst, src, accumulate);
}

}  // namespace vit::kernels::cpu
