// CPU kernels of the training recipe against independent double-precision
// references: softmax cross-entropy with soft targets (a mixup/cutmix label
// pair with its share, label smoothing), drop path and dropout (exact masks,
// expected value, position-keyed), and the weight average (EMA).
#define BOOST_TEST_MODULE kernels_recipe
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/context.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/cpu_threads.h"
#include "kernels/cross_entropy.h"
#include "kernels/dropout.h"
#include "kernels/ema.h"

using namespace vit;
namespace K = vit::kernels;

namespace {

const Context& cpu() {
  static const Context ctx{};
  return ctx;
}
Tensor f32(std::vector<float>& v, std::initializer_list<int64_t> dims) {
  return Tensor(v.data(), DType::F32, Device::CPU, dims);
}
Tensor i32(std::vector<int32_t>& v) {
  return Tensor(v.data(), DType::I32, Device::CPU, {static_cast<int64_t>(v.size())});
}

// The soft target's loss and gradient written the other way round from the
// kernel: log-probabilities first, then -sum_k t_k log p_k, all in double.
void soft_xent_reference(const std::vector<float>& x, int64_t B, int64_t K, const std::vector<int32_t>& a,
                         const std::vector<int32_t>& c, const std::vector<float>& lam, double eps, double gs,
                         std::vector<double>* loss, std::vector<double>* grad) {
  loss->assign(B, 0.0);
  grad->assign(B * K, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    double mx = -1e300;
    for (int64_t k = 0; k < K; ++k) mx = std::max(mx, double(x[b * K + k]));
    double z = 0;
    for (int64_t k = 0; k < K; ++k) z += std::exp(double(x[b * K + k]) - mx);
    for (int64_t k = 0; k < K; ++k) {
      const double logp = double(x[b * K + k]) - mx - std::log(z);
      const double t = (1 - eps) * ((k == a[b] ? double(lam[b]) : 0.0) + (k == c[b] ? 1.0 - lam[b] : 0.0)) + eps / K;
      (*loss)[b] -= t * logp;
      (*grad)[b * K + k] = (std::exp(logp) - t) * gs;
    }
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(soft_cross_entropy_matches_double_reference) {
  kernels::set_cpu_threads(2);
  Rng rng(7);
  struct Case {
    int64_t B, K;
    double eps;
    bool mixed;
  };
  for (const Case cs : {Case{9, 3, 0.1, true}, Case{9, 3, 0.0, true}, Case{6, 3, 0.1, false}, Case{5, 1000, 0.2, true},
                        Case{4, 37, 0.0, false}}) {
    BOOST_TEST_CONTEXT("B " << cs.B << " K " << cs.K << " eps " << cs.eps << (cs.mixed ? " mixed" : " hard")) {
      const int64_t B = cs.B, K = cs.K;
      std::vector<float> x(B * K), loss(B, NAN), dx(B * K, NAN), lam(B);
      std::vector<int32_t> a(B), c(B), pred(B, -1);
      for (auto& v : x) v = static_cast<float>(rng.uniform(-4, 4));
      for (int64_t b = 0; b < B; ++b) {
        a[b] = static_cast<int32_t>(rng.below(K));
        c[b] = cs.mixed ? static_cast<int32_t>(rng.below(K)) : a[b];
        lam[b] = cs.mixed ? static_cast<float>(rng.uniform()) : 1.0f;
      }
      if (cs.mixed) {  // the ends of the range and a pair with one label twice
        lam[0] = 0.0f;
        lam[1] = 1.0f;
        c[2] = a[2];
      }
      K::SoftTargets t;
      if (cs.mixed) {
        t.labels_b = i32(c);
        t.lambda = f32(lam, {B});
      }
      t.smoothing = static_cast<float>(cs.eps);
      const float gs = 0.25f;
      K::softmax_cross_entropy_soft(cpu(), f32(loss, {B}), i32(pred), f32(dx, {B, K}), f32(x, {B, K}), i32(a), t, gs);
      std::vector<double> ref_loss, ref_grad;
      soft_xent_reference(x, B, K, a, c, lam, cs.eps, gs, &ref_loss, &ref_grad);
      // The kernel forms the loss in double and rounds it once to fp32:
      // 1e-6 relative (16 ulp) leaves room; a wrong weight on any term is
      // off by O(eps) or O(lam) of a logit, orders of magnitude more.
      double max_loss_err = 0, max_grad_err = 0, max_grad = 0;
      for (int64_t b = 0; b < B; ++b) max_loss_err = std::max(max_loss_err, std::abs(loss[b] - ref_loss[b]) / std::max(1.0, std::abs(ref_loss[b])));
      for (int64_t i = 0; i < B * K; ++i) {
        max_grad_err = std::max(max_grad_err, std::abs(dx[i] - ref_grad[i]));
        max_grad = std::max(max_grad, std::abs(ref_grad[i]));
      }
      BOOST_TEST(max_loss_err <= 1e-6, "loss error " << max_loss_err);
      // Gradient: one rounding of a double to fp32 per element.
      BOOST_TEST(max_grad_err <= 1e-6 * max_grad, "gradient error " << max_grad_err << " of max " << max_grad);
      // Each row of the gradient sums to 0 (softmax and target both sum to 1).
      for (int64_t b = 0; b < B; ++b) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += dx[b * K + k];
        BOOST_TEST(std::abs(s) <= 1e-6 * K * gs);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(soft_cross_entropy_special_cases) {
  const int64_t B = 4, K = 5;
  Rng rng(11);
  std::vector<float> x(B * K), l1(B), l2(B), d1(B * K), d2(B * K), lam(B, 1.0f);
  std::vector<int32_t> a = {0, 4, 2, 2}, c = {3, 3, 3, 3}, p1(B), p2(B);
  for (auto& v : x) v = static_cast<float>(rng.uniform(-3, 3));
  // lambda 1 and no smoothing: exactly the hard-label kernel.
  K::SoftTargets t;
  t.labels_b = i32(c);
  t.lambda = f32(lam, {B});
  K::softmax_cross_entropy_soft(cpu(), f32(l1, {B}), i32(p1), f32(d1, {B, K}), f32(x, {B, K}), i32(a), t, 0.5f);
  K::softmax_cross_entropy(cpu(), f32(l2, {B}), i32(p2), f32(d2, {B, K}), f32(x, {B, K}), i32(a), 0.5f);
  for (int64_t b = 0; b < B; ++b) BOOST_TEST(std::abs(l1[b] - l2[b]) <= 1e-6f * std::abs(l2[b]) + 1e-7f);
  for (int64_t i = 0; i < B * K; ++i) BOOST_TEST(std::abs(d1[i] - d2[i]) <= 1e-7f);
  // Undefined targets and no smoothing: the hard kernel, bit for bit.
  K::softmax_cross_entropy_soft(cpu(), f32(l1, {B}), i32(p1), f32(d1, {B, K}), f32(x, {B, K}), i32(a),
                                K::SoftTargets{}, 0.5f);
  BOOST_TEST(l1 == l2);
  BOOST_TEST(d1 == d2);
  // Equal logits: the loss is log K whatever the target (it sums to 1).
  std::vector<float> flat(B * K, 0.7f);
  t.smoothing = 0.3f;
  lam = {0.2f, 0.5f, 0.9f, 0.0f};
  K::softmax_cross_entropy_soft(cpu(), f32(l1, {B}), i32(p1), f32(d1, {B, K}), f32(flat, {B, K}), i32(a), t, 1.0f);
  for (int64_t b = 0; b < B; ++b) BOOST_TEST(std::abs(l1[b] - std::log(5.0)) <= 1e-6);
  // Smoothing alone: the target of the label is 1 - eps + eps/K.
  K::softmax_cross_entropy_soft(cpu(), f32(l1, {B}), i32(p1), f32(d1, {B, K}), f32(flat, {B, K}), i32(a),
                                K::SoftTargets{Tensor(), Tensor(), 0.3f}, 1.0f);
  BOOST_TEST(std::abs(d1[0 * K + 0] - (0.2f - (0.7f + 0.06f))) <= 1e-6f);
  BOOST_TEST(std::abs(d1[0 * K + 1] - (0.2f - 0.06f)) <= 1e-6f);
  // Refused: a lambda outside [0, 1], a lonely labels_b, smoothing 1, a bad second label.
  lam[1] = 1.5f;
  BOOST_CHECK_THROW(K::softmax_cross_entropy_soft(cpu(), f32(l1, {B}), i32(p1), f32(d1, {B, K}), f32(x, {B, K}),
                                                  i32(a), t, 1.0f),
                    Error);
  lam[1] = 0.5f;
  BOOST_CHECK_THROW(K::softmax_cross_entropy_soft(cpu(), f32(l1, {B}), i32(p1), f32(d1, {B, K}), f32(x, {B, K}),
                                                  i32(a), K::SoftTargets{i32(c), Tensor(), 0.0f}, 1.0f),
                    Error);
  BOOST_CHECK_THROW(K::softmax_cross_entropy_soft(cpu(), f32(l1, {B}), i32(p1), f32(d1, {B, K}), f32(x, {B, K}),
                                                  i32(a), K::SoftTargets{Tensor(), Tensor(), 1.0f}, 1.0f),
                    Error);
  c[3] = 5;
  BOOST_CHECK_THROW(K::softmax_cross_entropy_soft(cpu(), f32(l1, {B}), i32(p1), f32(d1, {B, K}), f32(x, {B, K}),
                                                  i32(a), t, 1.0f),
                    Error);
}

// ---------------------------------------------------------------------------
// Drop path and dropout
// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_CASE(drop_path_keeps_or_drops_whole_samples_and_preserves_the_mean) {
  kernels::set_cpu_threads(2);
  const int64_t B = 20000, R = 6;
  const float keep = 0.7f;
  Rng rng(3);
  std::vector<float> x(B * R), out(B * R, NAN);
  for (auto& v : x) v = static_cast<float>(rng.uniform(0.5, 1.5));
  K::drop_path(cpu(), f32(out, {B, R}), f32(x, {B, R}), keep, 12345, 0);
  int64_t kept = 0;
  double sum_out = 0, sum_x = 0;
  bool exact = true;
  for (int64_t b = 0; b < B; ++b) {
    const bool k = out[b * R] != 0.0f;
    kept += k;
    for (int64_t r = 0; r < R; ++r) {
      exact = exact && out[b * R + r] == (k ? x[b * R + r] * (1.0f / keep) : 0.0f);
      sum_out += out[b * R + r];
      sum_x += x[b * R + r];
    }
    // The mask is the documented function of (key, position).
    exact = exact && k == (K::noise_uniform(12345, static_cast<uint64_t>(b), 0) < keep);
  }
  BOOST_TEST(exact, "every sample all kept (x / keep) or all dropped, as noise_uniform says");
  // Kept fraction: binomial, sd sqrt(p(1-p)/B) = 3.2e-3; 5 sd.
  BOOST_TEST(std::abs(double(kept) / B - keep) <= 5 * std::sqrt(keep * (1 - keep) / B));
  // The expected value is x: the mean of out over the mean of x within 5 sd
  // of the kept fraction's noise divided by keep.
  BOOST_TEST(std::abs(sum_out / sum_x - 1.0) <= 5 * std::sqrt(keep * (1 - keep) / B) / keep);
  // Position-keyed: the samples from position 100 on, given first_sample 100,
  // get the masks they had in the whole batch.
  std::vector<float> tail(x.begin() + 100 * R, x.end()), tail_out(tail.size());
  K::drop_path(cpu(), f32(tail_out, {B - 100, R}), f32(tail, {B - 100, R}), keep, 12345, 100);
  BOOST_TEST(std::equal(tail_out.begin(), tail_out.end(), out.begin() + 100 * R));
  // Same key: the same mask (backward reuses it); another key: another.
  std::vector<float> again(B * R), other(B * R);
  K::drop_path(cpu(), f32(again, {B, R}), f32(x, {B, R}), keep, 12345, 0);
  K::drop_path(cpu(), f32(other, {B, R}), f32(x, {B, R}), keep, 54321, 0);
  BOOST_TEST(again == out);
  BOOST_TEST(other != out);
  // In place equals out of place; keep 1 is the identity.
  std::vector<float> inplace = x;
  K::drop_path(cpu(), f32(inplace, {B, R}), f32(inplace, {B, R}), keep, 12345, 0);
  BOOST_TEST(inplace == out);
  K::drop_path(cpu(), f32(inplace, {B, R}), f32(x, {B, R}), 1.0f, 12345, 0);
  BOOST_TEST(inplace == x);
  BOOST_CHECK_THROW(K::drop_path(cpu(), f32(inplace, {B, R}), f32(x, {B, R}), 0.0f, 1, 0), Error);
}

BOOST_AUTO_TEST_CASE(dropout_masks_elements_with_the_documented_rate) {
  const int64_t B = 50, R = 4000;
  const float keep = 0.9f;
  std::vector<float> x(B * R, 2.0f), out(B * R, NAN);
  K::dropout(cpu(), f32(out, {B, R}), f32(x, {B, R}), keep, 99, 7);
  int64_t kept = 0;
  bool exact = true;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t r = 0; r < R; ++r) {
      const bool k = K::noise_uniform(99, static_cast<uint64_t>(7 + b), static_cast<uint64_t>(1 + r)) < keep;
      exact = exact && out[b * R + r] == (k ? 2.0f * (1.0f / keep) : 0.0f);
      kept += k;
    }
  }
  BOOST_TEST(exact);
  const double n = double(B) * R;
  BOOST_TEST(std::abs(kept / n - keep) <= 5 * std::sqrt(keep * (1 - keep) / n));
}

// ---------------------------------------------------------------------------
// Weight average
// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_CASE(ema_of_a_constant_is_that_constant_and_follows_the_recurrence) {
  const int64_t n = 1000;
  Rng rng(5);
  std::vector<float> p(n), ema(n), skip = {0.0f};
  for (auto& v : p) v = static_cast<float>(rng.normal());
  ema = p;
  for (int k = 0; k < 50; ++k) K::ema_update(cpu(), f32(ema, {n}), f32(p, {n}), 0.97f, f32(skip, {1}));
  BOOST_TEST(ema == p);  // bit for bit: the step towards p is exactly 0
  // Moving weights: k steps against the recurrence in double.
  std::vector<double> ref(ema.begin(), ema.end());
  for (int k = 0; k < 20; ++k) {
    for (auto& v : p) v = static_cast<float>(v + 0.1 * rng.normal());
    K::ema_update(cpu(), f32(ema, {n}), f32(p, {n}), 0.9f, Tensor());
    for (int64_t i = 0; i < n; ++i) ref[i] = 0.9 * ref[i] + 0.1 * p[i];
  }
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(ema[i] - ref[i]));
  // 20 fp32 roundings of O(1) values, ~6e-8 each: 1e-5 is ample, and a decay
  // off by 1e-3 moves the average by ~1e-3.
  BOOST_TEST(worst <= 1e-5, "largest difference " << worst);
  // A skipped step changes nothing.
  const std::vector<float> before = ema;
  skip[0] = 1.0f;
  for (auto& v : p) v += 1.0f;
  K::ema_update(cpu(), f32(ema, {n}), f32(p, {n}), 0.5f, f32(skip, {1}));
  BOOST_TEST(ema == before);
  // swap_values exchanges the two.
  std::vector<float> a = p, b = ema;
  K::swap_values(cpu(), f32(a, {n}), f32(b, {n}));
  BOOST_TEST(a == ema);
  BOOST_TEST(b == p);
}
