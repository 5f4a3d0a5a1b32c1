// GELU on the CPU, the exact (erf) form: gelu(x) = x * Phi(x), Phi the
// standard normal CDF, Phi(x) = 0.5 (1 + erf(x / sqrt 2)).
//
// libm's erff costs ~12 ns an element and never vectorises without
// -ffast-math; in the MLP of a small ViT that made GELU cost half as much as
// the GEMMs around it. So Phi is evaluated here branch-free, in a form the
// compiler turns into SIMD code:
// - erfc(a) = p(t) exp(-a^2), t = 1 / (1 + 0.3275911 a), with the degree-5
//   polynomial of Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7 absolute);
//   Phi(x) = 1 - erfc(a)/2 for x >= 0 and erfc(a)/2 below, a = |x| / sqrt 2,
//   so the negative tail is never a difference of two numbers near 1.
// - exp of a non-positive argument by Cody-Waite range reduction to
//   |r| <= ln2/2 and a degree-7 Taylor polynomial, the power of two built in
//   the exponent bits (error ~1e-7 relative, i.e. fp32 rounding).
// - The backward pass reuses the same exponential: gelu'(x) = Phi(x) + x phi(x)
//   with phi(x) = exp(-x^2/2) / sqrt(2 pi) and exp(-x^2/2) = exp(-a^2).
// The result stays within ~2e-7 (absolute, times max(1, |x|)) of the exact
// function (tests/kernels checks it against double-precision erf); NaN
// propagates, so nonfinite checks downstream still see it.
// The element loops are compiled for AVX-512, AVX2+FMA and baseline x86-64
// (VIT_CPU_CLONES) and split over threads in chunks: ~0.5 ns an element on
// one AVX-512 core against libm's ~12.
#include "kernels/gelu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu_checks.h"

namespace vit::kernels::cpu {

namespace {

// exp(x) for -87 <= x <= 0 (2^n stays a normal float; nothing else is needed).
inline float exp_nonpositive(float x) {
  // n = round(x / ln2) by the 1.5 * 2^23 trick (exact under round-to-nearest).
  const float n = (x * 1.44269504089f + 12582912.0f) - 12582912.0f;
  // r = x - n ln2 in two steps: n * 0.693359375 is exact (9 + 7 bits).
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(float));
  return p * scale;
}

// min(a, 9.3) for a >= 0 (or NaN), compared as integers: non-negative floats
// order like their bit patterns, and an integer select vectorises where a
// float compare-and-branch does not (with -ftrapping-math, GCC's default).
// 9.3^2 = 86.49 keeps exp_nonpositive in range; erfc(9.3) is below float's
// normal range anyway.
inline float cap_at_9_3(float a) {
  int32_t ia;
  std::memcpy(&ia, &a, sizeof(ia));
  constexpr int32_t kCap = 0x4114cccd;  // 9.3f
  ia = ia < kCap ? ia : kCap;
  float r;
  std::memcpy(&r, &ia, sizeof(r));
  return r;
}

struct Cdf {
  float cdf;      // Phi(x)
  float density;  // exp(-x^2 / 2), phi(x) without its 1/sqrt(2 pi)
};

inline Cdf normal_cdf(float x) {
  const float a = std::fabs(x) * 0.70710678118f;
  const float t = 1.0f / (1.0f + 0.3275911f * a);  // NaN in, NaN out from here
  const float poly =
      ((((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
  const float capped = cap_at_9_3(a);
  const float e = exp_nonpositive(-capped * capped);
  const float half_erfc = 0.5f * poly * e;
  // x >= 0: 1 - half_erfc; x < 0: half_erfc. Written with copysign because a
  // float select here would stop the vectoriser, as above.
  return {std::fabs(std::copysign(0.5f, x) + 0.5f - half_erfc), e};
}

// The element loops, compiled for several instruction sets (VIT_CPU_CLONES):
// with AVX-512 a vector holds 16 elements instead of SSE2's 4.
VIT_CPU_CLONES void gelu_forward_range(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    y[i] = v * normal_cdf(v).cdf;
  }
}

// dx = g * gelu'(x), and with kOut also y = gelu(x) as gelu_forward_range
// writes it (train.recompute_gelu). y may be g itself (g[i] is read before
// y[i] is written), so no pointer here is restrict. Inlined into each
// clone below, so it is compiled for the clone's instruction set.
template <bool kOut>
inline void gelu_backward_elements(const float* x, const float* g, float* dx, float* y, int64_t n) {
  constexpr float kInvSqrt2Pi = 0.39894228040f;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const Cdf c = normal_cdf(v);
    dx[i] = g[i] * (c.cdf + v * kInvSqrt2Pi * c.density);
    if constexpr (kOut) y[i] = v * c.cdf;
  }
}

VIT_CPU_CLONES void gelu_backward_range(const float* x, const float* g, float* dx, int64_t n) {
  gelu_backward_elements<false>(x, g, dx, nullptr, n);
}

VIT_CPU_CLONES void gelu_backward_recompute_range(const float* x, const float* g, float* dx, float* y, int64_t n) {
  gelu_backward_elements<true>(x, g, dx, y, n);
}

// Threads take chunks of this many elements.
constexpr int64_t kChunk = 4096;

void check_pair(const char* op, const char* out_name, const Tensor& out, const char* in_name, const Tensor& in) {
  detail::require_f32(op, out_name, out);
  detail::require_f32(op, in_name, in);
  detail::require_numel(op, out_name, out, in.numel(), in_name);
}

}  // namespace

void gelu_forward(const Context&, Tensor out, const Tensor& inp) {
  const char* op = "gelu_forward";
  check_pair(op, "out", out, "inp", inp);
  const int64_t n = inp.numel();
  const float* x = inp.f32();
  float* y = out.f32();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > detail::kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kChunk;
    gelu_forward_range(x + lo, y + lo, std::min(kChunk, n - lo));
  }
}

namespace {

// dinp = dout * gelu'(inp), and with `out` defined out = gelu(inp), in
// chunks over the threads; then dbias (+)= dinp's column sums (gelu.h).
void gelu_backward_chunks(const char* op, Tensor dinp, Tensor out, const Tensor& inp, const Tensor& dout,
                          const Tensor& dbias, bool accumulate) {
  check_pair(op, "dinp", dinp, "inp", inp);
  check_pair(op, "dout", dout, "inp", inp);
  if (out.defined()) {
    check_pair(op, "out", out, "inp", inp);
    VIT_CHECK(dinp.data != out.data && dinp.data != dout.data, op,
              ": dinp must not alias out or dout (it may be inp)");
  }
  const int64_t n = inp.numel();
  int64_t C = 0;
  if (dbias.defined()) {
    detail::require_cpu(op, "dbias", dbias);
    detail::require_f32(op, "dbias", dbias);
    C = dbias.numel();
    VIT_CHECK(C > 0 && n % C == 0, op, ": dbias has ", C, " elements, which do not divide dinp's ", n,
              " into rows");
  }
  const float* x = inp.f32();
  const float* g = dout.f32();
  float* dx = dinp.f32();
  float* y = out.defined() ? out.f32() : nullptr;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > detail::kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kChunk, len = std::min(kChunk, n - lo);
    if (y) {
      gelu_backward_recompute_range(x + lo, g + lo, dx + lo, y + lo, len);
    } else {
      gelu_backward_range(x + lo, g + lo, dx + lo, len);
    }
  }
  if (C > 0) detail::add_column_sums(dbias.f32(), dx, n / C, C, accumulate);
}

}  // namespace

void gelu_backward(const Context&, Tensor dinp, const Tensor& inp, const Tensor& dout, Tensor dbias,
                   bool accumulate) {
  gelu_backward_chunks("gelu_backward", dinp, Tensor(), inp, dout, dbias, accumulate);
}

void gelu_backward_recompute(const Context&, Tensor dinp, Tensor out, const Tensor& inp, const Tensor& dout,
                             Tensor dbias, bool accumulate) {
  VIT_CHECK(out.defined(), "gelu_backward_recompute: out is undefined");
  gelu_backward_chunks("gelu_backward_recompute", dinp, out, inp, dout, dbias, accumulate);
}

}  // namespace vit::kernels::cpu
