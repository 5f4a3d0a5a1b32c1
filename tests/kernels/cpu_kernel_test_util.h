// Helpers for the CPU kernel tests: host arrays with tensor views, random
// fills, double-precision reference pieces and the finite-difference check.
//
// The gradient check. Every op's backward is compared with central
// differences of a scalar loss L = sum(out * R), R random, taken by calling
// the fp32 kernel itself on perturbed inputs and accumulating L in double.
// Two details keep the numeric side honest in fp32:
// - the step actually taken is (float)(x + h) - (float)(x - h), computed
//   in double, not the nominal 2h (x + h rounds to the fp32 grid, an error of
//   up to 6e-5 relative at h = 1e-3 on O(1) values);
// - elements of `out` that the perturbed input does not touch come out
//   bit-identical in both evaluations and cancel exactly, so the noise in
//   L+ - L- is only the fp32 rounding (~6e-8 |out|) of the few touched
//   outputs, divided by 2h = 2e-3: ~1e-4 of the gradient's size, above the
//   O(h^2) ~ 1e-6 truncation error.
// Hence the tolerance used below: max |analytic - numeric| over a tensor,
// divided by max |numeric| over that tensor, <= 2e-3 (an order above the
// ~1e-4 noise; a wrong formula gives O(1)). The check also requires the
// gradient to be non-trivial (max |numeric| > 1e-3) so that it cannot pass on
// two zero arrays.
#pragma once

#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace vit_test {

using vit::Context;
using vit::Device;
using vit::DType;
using vit::Tensor;

inline const Context& cpu_ctx() {
  static const Context ctx{};
  return ctx;
}

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A host fp32 array and a tensor view of it. Moving keeps the view valid (the
// vector's storage moves with it); copying is not allowed.
struct Arr {
  std::vector<float> v;
  Tensor t;

  Arr() = default;
  explicit Arr(std::initializer_list<int64_t> dims, float value = 0.0f) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    v.assign(static_cast<size_t>(n), value);
    t = Tensor(v.data(), DType::F32, Device::CPU, dims);
  }
  Arr(const Arr&) = delete;
  Arr& operator=(const Arr&) = delete;
  Arr(Arr&&) = default;
  Arr& operator=(Arr&&) = default;

  int64_t size() const { return static_cast<int64_t>(v.size()); }
  float& operator[](int64_t i) { return v[static_cast<size_t>(i)]; }
  float operator[](int64_t i) const { return v[static_cast<size_t>(i)]; }
  operator const Tensor&() const { return t; }
};

inline Arr randn(std::initializer_list<int64_t> dims, vit::Rng& rng, double scale = 1.0, double shift = 0.0) {
  Arr a(dims);
  for (auto& x : a.v) x = static_cast<float>(shift + scale * rng.normal());
  return a;
}

inline double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// sum(out * R) in double.
inline double weighted_sum(const Arr& out, const Arr& r) {
  double s = 0.0;
  for (int64_t i = 0; i < out.size(); ++i) s += static_cast<double>(out[i]) * r[i];
  return s;
}

// Largest |a - b| / max(|b|, floor) over two arrays of equal length.
inline double max_rel_err(const std::vector<double>& a, const std::vector<double>& b, double floor) {
  double e = 0.0;
  for (size_t i = 0; i < a.size(); ++i) e = std::max(e, std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), floor));
  return e;
}

template <typename Loss>
double numeric_derivative(float& x, Loss&& loss, float h) {
  const float x0 = x;
  const float xp = x0 + h, xm = x0 - h;
  x = xp;
  const double lp = loss();
  x = xm;
  const double lm = loss();
  x = x0;
  return (lp - lm) / (static_cast<double>(xp) - static_cast<double>(xm));
}

constexpr double kGradTol = 2e-3;  // see the file comment

// Checks `analytic` (the kernel's gradient of L with respect to x) against
// central differences of loss() for every element of x.
template <typename Loss>
void check_gradient(const std::string& what, Arr& x, const std::vector<double>& analytic, Loss&& loss,
                    float h = 1e-3f, double tol = kGradTol) {
  BOOST_REQUIRE_EQUAL(static_cast<int64_t>(analytic.size()), x.size());
  std::vector<double> numeric(analytic.size());
  for (int64_t i = 0; i < x.size(); ++i) numeric[i] = numeric_derivative(x[i], loss, h);
  double scale = 0.0, worst = 0.0;
  int64_t worst_i = 0;
  for (size_t i = 0; i < numeric.size(); ++i) {
    scale = std::max(scale, std::abs(numeric[i]));
    const double e = std::abs(analytic[i] - numeric[i]);
    if (e > worst) {
      worst = e;
      worst_i = static_cast<int64_t>(i);
    }
  }
  BOOST_TEST_MESSAGE(what << ": max |analytic - numeric| / max |numeric| = " << worst / scale << " (scale " << scale
                          << ")");
  BOOST_CHECK_MESSAGE(scale > 1e-3, what << ": the numeric gradient is ~0 (max " << scale << "), nothing checked");
  BOOST_CHECK_MESSAGE(worst <= tol * scale, what << ": element " << worst_i << " analytic " << analytic[worst_i]
                                                 << " numeric " << numeric[worst_i] << ", normalised error "
                                                 << worst / scale << " > " << tol);
}

// analytic gradient of an assigned (=) output: the buffer itself.
inline std::vector<double> as_double(const Arr& g) { return std::vector<double>(g.v.begin(), g.v.end()); }

// analytic gradient of an accumulated (+=) output: what was added on top of
// the prefill.
inline std::vector<double> added_to(const Arr& g, const Arr& prefill) {
  std::vector<double> d(g.v.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<double>(g.v[i]) - prefill.v[i];
  return d;
}

// A copy of `a` (same shape) for remembering a prefill.
inline Arr clone(const Arr& a) {
  Arr c;
  c.v = a.v;
  c.t = a.t;
  c.t.data = c.v.data();
  return c;
}

inline bool all_finite(const Arr& a) {
  return std::all_of(a.v.begin(), a.v.end(), [](float x) { return std::isfinite(x); });
}

}  // namespace vit_test
