// The optimizer step's kernels on the CPU: AdamW over several steps against
// the formula in double, grad_scale / skip / param_lowp semantics, the norm
// and nonfinite reductions, clipping coefficients, casts and fill.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "cpu_kernel_test_util.h"
#include "kernels/adamw.h"
#include "kernels/cast.h"
#include "kernels/cpu_threads.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/profile.h"
#include "kernels/reduce.h"

using namespace vit_test;
namespace cpu = vit::kernels::cpu;
using vit::bf16_t;
using vit::f16_t;
using vit::Rng;

BOOST_AUTO_TEST_SUITE(optim)

BOOST_AUTO_TEST_CASE(adamw_several_steps_against_double_formula) {
  Rng rng(31);
  const int64_t n = 1000;
  Arr p = randn({n}, rng), m({n}), v({n}), g({n}), scale({1});
  std::vector<double> pd(p.v.begin(), p.v.end()), md(n, 0.0), vd(n, 0.0);
  vit::kernels::AdamWHyper hp;
  hp.lr = 2e-3f;
  hp.weight_decay = 0.05f;
  for (int64_t step = 1; step <= 6; ++step) {
    for (auto& x : g.v) x = static_cast<float>(rng.normal());
    // Steps 2 and 5 carry a grad_scale (a loss scale / clip coefficient).
    const bool scaled = step == 2 || step == 5;
    scale[0] = scaled ? 0.125f : 1.0f;
    hp.step = step;
    cpu::adamw_update(cpu_ctx(), p.t, m.t, v.t, g, Tensor(), hp, scaled ? scale.t : Tensor(), Tensor());
    const double b1 = hp.beta1, b2 = hp.beta2, lr = hp.lr, wd = hp.weight_decay, eps = hp.eps;
    for (int64_t i = 0; i < n; ++i) {
      const double gi = static_cast<double>(g[i]) * scale[0];
      md[i] = b1 * md[i] + (1 - b1) * gi;
      vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
      pd[i] -= lr * wd * pd[i];
      pd[i] -= lr * (md[i] / (1 - std::pow(b1, step))) / (std::sqrt(vd[i] / (1 - std::pow(b2, step))) + eps);
    }
  }
  // Each step rounds m = b1 m + (1 - b1) g (terms up to ~3) to fp32: ~2e-7
  // absolute per step, and m can cancel to ~0, so m is compared absolutely
  // (1e-6 after six steps). v is a sum of squares, no cancellation: a few ulp,
  // 2e-6 relative. p takes one rounding for the decay and one for the update
  // per step, 12 half-ulps = 6 * 2^-23 |p| ~ 7.2e-7 |p| at worst after six
  // steps: 1e-6 * max(1, |p|).
  double worst_p = 0, worst_m = 0, worst_v = 0;
  for (int64_t i = 0; i < n; ++i) {
    worst_p = std::max(worst_p, std::abs(p[i] - pd[i]) / std::max(1.0, std::abs(pd[i])));
    worst_m = std::max(worst_m, std::abs(m[i] - md[i]));
    worst_v = std::max(worst_v, std::abs(v[i] - vd[i]) / std::max(vd[i], 1e-6));
  }
  BOOST_TEST_MESSAGE("adamw after 6 steps: |p - ref| / max(1, |p|) " << worst_p << ", |m - ref| " << worst_m << ", v rel " << worst_v);
  BOOST_TEST(worst_p <= 1e-6);
  BOOST_TEST(worst_m <= 1e-6);
  BOOST_TEST(worst_v <= 2e-6);
}

BOOST_AUTO_TEST_CASE(adamw_skip_grad_scale_and_low_precision_copy) {
  Rng rng(32);
  const int64_t n = 257;
  Arr p = randn({n}, rng), m = randn({n}, rng, 0.1), v({n}), g = randn({n}, rng), flag({1}), one({1}, 1.0f);
  for (auto& x : v.v) x = static_cast<float>(0.01 + 0.01 * rng.uniform());
  vit::kernels::AdamWHyper hp;
  hp.step = 3;
  hp.weight_decay = 0.1f;
  std::vector<uint16_t> low(n, 0xdead);
  const Tensor low_bf16(low.data(), DType::BF16, Device::CPU, {n});

  // skip != 0: nothing moves, the low-precision copy included.
  const Arr p0 = clone(p), m0 = clone(m), v0 = clone(v);
  flag[0] = 1.0f;
  cpu::adamw_update(cpu_ctx(), p.t, m.t, v.t, g, low_bf16, hp, Tensor(), flag);
  BOOST_TEST(p.v == p0.v, boost::test_tools::per_element());
  BOOST_TEST(m.v == m0.v, boost::test_tools::per_element());
  BOOST_TEST(v.v == v0.v, boost::test_tools::per_element());
  BOOST_TEST(low == std::vector<uint16_t>(n, 0xdead), boost::test_tools::per_element());

  // skip == 0 and grad_scale == 1 act exactly like both undefined.
  flag[0] = 0.0f;
  Arr p2 = clone(p0), m2 = clone(m0), v2 = clone(v0);
  cpu::adamw_update(cpu_ctx(), p.t, m.t, v.t, g, low_bf16, hp, one, flag);
  cpu::adamw_update(cpu_ctx(), p2.t, m2.t, v2.t, g, Tensor(), hp, Tensor(), Tensor());
  BOOST_TEST(p.v == p2.v, boost::test_tools::per_element());
  BOOST_TEST(m.v == m2.v, boost::test_tools::per_element());
  BOOST_TEST(v.v == v2.v, boost::test_tools::per_element());
  bool moved = false;
  for (int64_t i = 0; i < n; ++i) moved = moved || p[i] != p0[i];
  BOOST_TEST(moved);
  // param_lowp receives the updated parameters, rounded to nearest even.
  for (int64_t i = 0; i < n; ++i) BOOST_TEST(low[i] == vit::float_to_bf16(p[i]).bits);

  // fp16 and fp32 copies too.
  std::vector<uint16_t> low16(n);
  Arr low32({n}, kNaN);
  Arr p3 = clone(p0), m3 = clone(m0), v3 = clone(v0), p4 = clone(p0), m4 = clone(m0), v4 = clone(v0);
  cpu::adamw_update(cpu_ctx(), p3.t, m3.t, v3.t, g, Tensor(low16.data(), DType::F16, Device::CPU, {n}), hp, Tensor(),
                    Tensor());
  cpu::adamw_update(cpu_ctx(), p4.t, m4.t, v4.t, g, low32.t, hp, Tensor(), Tensor());
  for (int64_t i = 0; i < n; ++i) {
    BOOST_TEST(low16[i] == vit::float_to_f16(p3[i]).bits);
    BOOST_TEST(low32[i] == p4[i]);
  }
}

BOOST_AUTO_TEST_CASE(adamw_low_precision_copy_is_bit_exact_for_every_kind_of_value) {
  // The vectorised 16-bit stores (branch-free rounding) must give the bits of
  // core/dtype.h's conversions for every float: with lr 0, grad 0 the update
  // leaves each parameter as it is (p * 1 - 0), so param_lowp is just the
  // conversion of arbitrary bit patterns: every 61st of all 2^32 (all
  // exponents, mantissas, signs; NaN, inf, subnormal inputs) plus, for every
  // top 16 bits, the low halves that sit on and around both formats'
  // rounding boundaries (bf16: 0x8000, fp16 normals: 0x1000 of the low 13).
  std::vector<uint32_t> patterns;
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 61) patterns.push_back(static_cast<uint32_t>(u));
  for (uint32_t hi = 0; hi < 0x10000u; ++hi) {
    for (uint32_t lo : {0x0000u, 0x0fffu, 0x1000u, 0x1001u, 0x3000u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
      patterns.push_back(hi << 16 | lo);
    }
  }
  vit::kernels::AdamWHyper hp;
  hp.lr = 0.0f;
  const int64_t block = 1 << 20;  // in pieces: a multi-threaded call each
  size_t bf16_bad = 0, f16_bad = 0, first_bad = 0;
  for (size_t at = 0; at < patterns.size(); at += block) {
    const int64_t n = std::min<int64_t>(block, static_cast<int64_t>(patterns.size() - at));
    Arr p({n}), m({n}), v({n}), g({n});
    std::memcpy(p.v.data(), patterns.data() + at, static_cast<size_t>(n) * 4);
    std::vector<uint16_t> b16(static_cast<size_t>(n)), h16(static_cast<size_t>(n));
    Arr p2 = clone(p);
    cpu::adamw_update(cpu_ctx(), p.t, m.t, v.t, g, Tensor(b16.data(), DType::BF16, Device::CPU, {n}), hp, Tensor(),
                      Tensor());
    cpu::adamw_update(cpu_ctx(), p2.t, m.t, v.t, g, Tensor(h16.data(), DType::F16, Device::CPU, {n}), hp, Tensor(),
                      Tensor());
    for (int64_t i = 0; i < n; ++i) {
      // Compare with the conversion of what the update left in p (a
      // signalling NaN may have been quietened by p * 1).
      const bool bad_b = b16[static_cast<size_t>(i)] != vit::float_to_bf16(p[i]).bits;
      const bool bad_h = h16[static_cast<size_t>(i)] != vit::float_to_f16(p2[i]).bits;
      if ((bad_b || bad_h) && bf16_bad + f16_bad == 0) first_bad = at + static_cast<size_t>(i);
      bf16_bad += bad_b;
      f16_bad += bad_h;
    }
  }
  BOOST_TEST(bf16_bad == 0u, bf16_bad << " bf16 mismatches, first at pattern 0x" << std::hex << patterns[first_bad]);
  BOOST_TEST(f16_bad == 0u, f16_bad << " fp16 mismatches, first at pattern 0x" << std::hex << patterns[first_bad]);
}

BOOST_AUTO_TEST_CASE(adamw_threads_cover_every_element_once) {
  // Ranges per thread with ragged ends: the threaded update equals the
  // single-threaded one element for element, for lengths around the
  // alignment and the parallel threshold.
  Rng rng(34);
  for (int64_t n : {int64_t{1}, int64_t{63}, int64_t{65}, int64_t{16385}, int64_t{100003}}) {
    Arr p = randn({n}, rng), m = randn({n}, rng, 0.1), v({n}, 0.01f), g = randn({n}, rng);
    Arr p1 = clone(p), m1 = clone(m), v1 = clone(v);
    std::vector<uint16_t> low(static_cast<size_t>(n), 0xdead), low1(static_cast<size_t>(n), 0xbeef);
    vit::kernels::AdamWHyper hp;
    hp.weight_decay = 0.05f;
    vit::kernels::set_cpu_threads(4);
    cpu::adamw_update(cpu_ctx(), p.t, m.t, v.t, g, Tensor(low.data(), DType::F16, Device::CPU, {n}), hp, Tensor(),
                      Tensor());
    vit::kernels::set_cpu_threads(1);
    cpu::adamw_update(cpu_ctx(), p1.t, m1.t, v1.t, g, Tensor(low1.data(), DType::F16, Device::CPU, {n}), hp, Tensor(),
                      Tensor());
    BOOST_TEST(p.v == p1.v, boost::test_tools::per_element());
    BOOST_TEST(m.v == m1.v, boost::test_tools::per_element());
    BOOST_TEST(v.v == v1.v, boost::test_tools::per_element());
    BOOST_TEST(low == low1, boost::test_tools::per_element());
  }
}

BOOST_AUTO_TEST_CASE(sum_squares_accumulates_in_double) {
  Rng rng(33);
  const int64_t n = 200003;  // several 64K blocks and a ragged tail
  Arr x = randn({n}, rng), out({1}, 2.5f);
  double ref = 0.0;
  for (float e : x.v) ref += static_cast<double>(e) * e;
  cpu::sum_squares(cpu_ctx(), out.t, x);
  // A double sum rounded once to fp32: 2^-24 relative (1e-7 with room).
  BOOST_TEST(std::abs(out[0] - (2.5 + ref)) <= 1e-7 * (2.5 + ref));
  // Twice: out accumulates (+=).
  cpu::sum_squares(cpu_ctx(), out.t, x);
  BOOST_TEST(std::abs(out[0] - (2.5 + 2 * ref)) <= 2e-7 * (2.5 + 2 * ref));

  // 16-bit inputs: small integers are exact in bf16 and fp16, so the sum is exact.
  const int64_t k = 100;
  std::vector<bf16_t> xb(k);
  std::vector<f16_t> xh(k);
  double exact = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    const float val = static_cast<float>(i % 17) - 8.0f;
    xb[i] = vit::float_to_bf16(val);
    xh[i] = vit::float_to_f16(val);
    exact += static_cast<double>(val) * val;
  }
  Arr ob({1}), oh({1});
  cpu::sum_squares(cpu_ctx(), ob.t, Tensor(xb.data(), DType::BF16, Device::CPU, {k}));
  cpu::sum_squares(cpu_ctx(), oh.t, Tensor(xh.data(), DType::F16, Device::CPU, {k}));
  BOOST_TEST(ob[0] == exact);
  BOOST_TEST(oh[0] == exact);
}

// The fused sweep gemini runs per offloaded chunk: bit for bit what
// sum_squares adds and what nonfinite_flag sets (same blocks, same order).
BOOST_AUTO_TEST_CASE(sum_squares_flag_is_sum_squares_and_nonfinite_flag_in_one_sweep) {
  Rng rng(34);
  const int64_t n = 200003;  // several 64K blocks and a ragged tail
  Arr x = randn({n}, rng);
  Arr sep({1}, 2.5f), fused({1}, 2.5f), sep_flag({1}, 0.0f), fused_flag({1}, 0.0f);
  cpu::sum_squares(cpu_ctx(), sep.t, x);
  cpu::nonfinite_flag(cpu_ctx(), sep_flag.t, x);
  cpu::sum_squares_flag(cpu_ctx(), fused.t, fused_flag.t, x, Tensor());
  BOOST_TEST(fused[0] == sep[0]);  // bitwise
  BOOST_TEST(fused_flag[0] == 0.0f);
  x[123457] = std::numeric_limits<float>::infinity();
  cpu::sum_squares_flag(cpu_ctx(), fused.t, fused_flag.t, x, Tensor());
  BOOST_TEST(fused_flag[0] == 1.0f);
  x[123457] = 0.0f;
  fused_flag[0] = 1.0f;  // left as is: calls OR together
  cpu::sum_squares_flag(cpu_ctx(), fused.t, fused_flag.t, x, Tensor());
  BOOST_TEST(fused_flag[0] == 1.0f);
  std::vector<bf16_t> xb = {vit::float_to_bf16(3.0f), vit::float_to_bf16(-4.0f)};
  Arr ob({1}), fb({1});
  cpu::sum_squares_flag(cpu_ctx(), ob.t, fb.t, Tensor(xb.data(), DType::BF16, Device::CPU, {2}), Tensor());
  BOOST_TEST(ob[0] == 25.0f);
  BOOST_TEST(fb[0] == 0.0f);
}

BOOST_AUTO_TEST_CASE(nonfinite_flag_ors_over_calls_and_dtypes) {
  Arr flag({1}, 0.0f);
  Arr finite({5}, FLT_MAX);  // the largest finite value is not flagged
  finite[2] = -FLT_MAX;
  cpu::nonfinite_flag(cpu_ctx(), flag.t, finite);
  BOOST_TEST(flag[0] == 0.0f);
  Arr with_inf({5}, 1.0f);
  with_inf[4] = -std::numeric_limits<float>::infinity();
  cpu::nonfinite_flag(cpu_ctx(), flag.t, with_inf);
  BOOST_TEST(flag[0] == 1.0f);
  cpu::nonfinite_flag(cpu_ctx(), flag.t, finite);  // left as is: calls OR together
  BOOST_TEST(flag[0] == 1.0f);
  flag[0] = 0.0f;
  Arr with_nan({70000}, 0.5f);  // long enough to run threaded
  with_nan[41234] = std::numeric_limits<float>::quiet_NaN();
  cpu::nonfinite_flag(cpu_ctx(), flag.t, with_nan);
  BOOST_TEST(flag[0] == 1.0f);

  // 16-bit: largest finite (bf16 0x7f7f, fp16 0x7bff) passes, inf and NaN do not.
  auto flag16 = [](DType dt, std::vector<uint16_t> bits) {
    Arr f({1}, 0.0f);
    cpu::nonfinite_flag(cpu_ctx(), f.t, Tensor(bits.data(), dt, Device::CPU, {static_cast<int64_t>(bits.size())}));
    return f[0];
  };
  BOOST_TEST(flag16(DType::BF16, {0x3f80, 0x7f7f, 0xff7f}) == 0.0f);
  BOOST_TEST(flag16(DType::BF16, {0x3f80, 0x7f80}) == 1.0f);
  BOOST_TEST(flag16(DType::BF16, {0xffc1, 0x0000}) == 1.0f);
  BOOST_TEST(flag16(DType::F16, {0x3c00, 0x7bff, 0xfbff}) == 0.0f);
  BOOST_TEST(flag16(DType::F16, {0xfc00}) == 1.0f);
  BOOST_TEST(flag16(DType::F16, {0x0001, 0x7e00}) == 1.0f);
}

BOOST_AUTO_TEST_CASE(grad_scale_from_norm_with_and_without_clipping) {
  // Gradients scaled by a loss scale of 1024 whose true norm is 4.
  const double loss_scale = 1024.0, true_norm = 4.0;
  Arr sumsq({1}, static_cast<float>(true_norm * true_norm * loss_scale * loss_scale));
  Arr scale({1}, kNaN), norm({1}, kNaN);
  const float inv = static_cast<float>(1.0 / loss_scale);
  struct Case {
    float max_norm;
    double clip;
  };
  // No clipping (max_norm <= 0), a bound above the norm (coefficient > 1 is
  // capped at 1), and a bound below it (clip to 1 / (4 + 1e-6)).
  for (const Case c : {Case{0.0f, 1.0}, Case{-1.0f, 1.0}, Case{10.0f, 1.0}, Case{1.0f, 1.0 / (4.0 + 1e-6)}}) {
    cpu::grad_scale_from_norm(cpu_ctx(), scale.t, norm.t, sumsq, c.max_norm, inv);
    // One rounding to fp32 of a double expression: 2^-24 relative.
    BOOST_TEST(std::abs(norm[0] - true_norm) <= 1e-7 * true_norm);
    BOOST_TEST(std::abs(scale[0] - c.clip / loss_scale) <= 1e-7 * c.clip / loss_scale);
  }
  // A NaN norm is not hidden behind "no clipping needed".
  sumsq[0] = std::numeric_limits<float>::quiet_NaN();
  cpu::grad_scale_from_norm(cpu_ctx(), scale.t, norm.t, sumsq, 1.0f, 1.0f);
  BOOST_TEST(std::isnan(scale[0]));
  BOOST_TEST(std::isnan(norm[0]));
}

BOOST_AUTO_TEST_CASE(scale_inplace_every_dtype) {
  Arr x({5});
  for (int i = 0; i < 5; ++i) x[i] = 0.1f * static_cast<float>(i) - 0.2f;
  const Arr x0 = clone(x);
  cpu::scale_inplace(cpu_ctx(), x.t, 0.3f);
  for (int i = 0; i < 5; ++i) BOOST_TEST(x[i] == x0[i] * 0.3f);  // one fp32 multiply
  std::vector<bf16_t> b = {vit::float_to_bf16(3.0f), vit::float_to_bf16(-1.5f)};
  std::vector<f16_t> h = {vit::float_to_f16(3.0f), vit::float_to_f16(-1.5f)};
  cpu::scale_inplace(cpu_ctx(), Tensor(b.data(), DType::BF16, Device::CPU, {2}), 0.5f);
  cpu::scale_inplace(cpu_ctx(), Tensor(h.data(), DType::F16, Device::CPU, {2}), 0.5f);
  BOOST_TEST(vit::bf16_to_float(b[0]) == 1.5f);
  BOOST_TEST(vit::bf16_to_float(b[1]) == -0.75f);
  BOOST_TEST(vit::f16_to_float(h[0]) == 1.5f);
  BOOST_TEST(vit::f16_to_float(h[1]) == -0.75f);
}

BOOST_AUTO_TEST_CASE(cast_every_pair_and_known_bits) {
  Rng rng(34);
  const int64_t n = 40000;  // threaded
  std::vector<float> src32(n);
  for (int64_t i = 0; i < n; ++i) src32[i] = static_cast<float>(rng.normal() * std::pow(10.0, rng.uniform(-8, 6)));
  src32[0] = 65504.0f;
  src32[1] = 1e-40f;  // an fp32 subnormal
  src32[2] = -0.0f;
  src32[3] = std::numeric_limits<float>::infinity();

  std::vector<uint16_t> b16(n), h16(n), b16b(n), h16b(n);
  std::vector<float> back(n);
  auto T32 = [&](std::vector<float>& v) { return Tensor(v.data(), DType::F32, Device::CPU, {n}); };
  auto TB = [&](std::vector<uint16_t>& v) { return Tensor(v.data(), DType::BF16, Device::CPU, {n}); };
  auto TH = [&](std::vector<uint16_t>& v) { return Tensor(v.data(), DType::F16, Device::CPU, {n}); };

  // fp32 -> 16-bit: the core conversions' bits exactly.
  cpu::cast(cpu_ctx(), TB(b16), T32(src32));
  cpu::cast(cpu_ctx(), TH(h16), T32(src32));
  for (int64_t i = 0; i < n; ++i) {
    BOOST_TEST_REQUIRE(b16[i] == vit::float_to_bf16(src32[i]).bits);
    BOOST_TEST_REQUIRE(h16[i] == vit::float_to_f16(src32[i]).bits);
  }
  // 16-bit -> fp32 is exact, so a round trip 16 -> 32 -> 16 is the identity.
  cpu::cast(cpu_ctx(), T32(back), TB(b16));
  cpu::cast(cpu_ctx(), TB(b16b), T32(back));
  BOOST_TEST(b16b == b16, boost::test_tools::per_element());
  cpu::cast(cpu_ctx(), T32(back), TH(h16));
  cpu::cast(cpu_ctx(), TH(h16b), T32(back));
  BOOST_TEST(h16b == h16, boost::test_tools::per_element());
  // 16 -> 16 through fp32, one rounding.
  cpu::cast(cpu_ctx(), TH(h16b), TB(b16));
  cpu::cast(cpu_ctx(), TB(b16b), TH(h16));
  for (int64_t i = 0; i < n; ++i) {
    BOOST_TEST_REQUIRE(h16b[i] == vit::float_to_f16(vit::bf16_to_float(bf16_t{b16[i]})).bits);
    BOOST_TEST_REQUIRE(b16b[i] == vit::float_to_bf16(vit::f16_to_float(f16_t{h16[i]})).bits);
  }
  // Equal dtypes: a bitwise copy (a NaN payload survives), each of the three.
  std::vector<float> copy32(n);
  src32[5] = std::numeric_limits<float>::signaling_NaN();
  cpu::cast(cpu_ctx(), T32(copy32), T32(src32));
  BOOST_TEST(std::memcmp(copy32.data(), src32.data(), n * sizeof(float)) == 0);
  cpu::cast(cpu_ctx(), TB(b16b), TB(b16));
  BOOST_TEST(b16b == b16, boost::test_tools::per_element());
  cpu::cast(cpu_ctx(), TH(h16b), TH(h16));
  BOOST_TEST(h16b == h16, boost::test_tools::per_element());

  // Known bit patterns: fp16 max 65504 (0x7bff) -> bf16 rounds up to 65536
  // (0x4780) -> fp16 overflows to inf (0x7c00); 1 and -2 in both formats.
  BOOST_TEST(h16[0] == 0x7bff);
  BOOST_TEST(b16[0] == 0x4780);
  std::vector<uint16_t> one_bf = {0x4780, 0x3f80, 0xc000}, to_h(3);
  cpu::cast(cpu_ctx(), Tensor(to_h.data(), DType::F16, Device::CPU, {3}),
            Tensor(one_bf.data(), DType::BF16, Device::CPU, {3}));
  BOOST_TEST(to_h == (std::vector<uint16_t>{0x7c00, 0x3c00, 0xc000}), boost::test_tools::per_element());
  BOOST_TEST(h16[1] == 0x0000);  // 1e-40 underflows fp16 to +0
  BOOST_TEST(h16[2] == 0x8000);  // -0 keeps its sign
  BOOST_TEST(b16[3] == 0x7f80);  // inf
}

BOOST_AUTO_TEST_CASE(fill_every_dtype) {
  Arr x({70000}, kNaN);
  cpu::fill(cpu_ctx(), x.t, 0.1f);
  BOOST_TEST(std::all_of(x.v.begin(), x.v.end(), [](float e) { return e == 0.1f; }));
  std::vector<uint16_t> b(9, 0), h(9, 0);
  cpu::fill(cpu_ctx(), Tensor(b.data(), DType::BF16, Device::CPU, {3, 3}), 0.1f);
  cpu::fill(cpu_ctx(), Tensor(h.data(), DType::F16, Device::CPU, {9}), 0.1f);
  // 0.1f = 0x3dcccccd: bf16 rounds the low half 0xcccd up to 0x3dcd; fp16
  // 1.6 * 2^-4 -> exponent 11, mantissa round(0.6 * 1024) = 614 -> 0x2e66.
  BOOST_TEST(b == std::vector<uint16_t>(9, 0x3dcd), boost::test_tools::per_element());
  BOOST_TEST(h == std::vector<uint16_t>(9, 0x2e66), boost::test_tools::per_element());
}

// benchmark.profile's memory rates: the memory-bound ops tell the profiler
// the bytes a call reads and writes (each operand once, a read-and-written
// one twice), on the CPU as on the GPU.
BOOST_AUTO_TEST_CASE(profiled_ops_count_the_bytes_they_move) {
  Rng rng(41);
  const int64_t n = 1000;
  Arr p = randn({n}, rng), m({n}), v({n}, 0.01f), g = randn({n}, rng), sumsq({1}), flag({1});
  std::vector<uint16_t> low(n, 0);
  const Tensor low_bf16(low.data(), DType::BF16, Device::CPU, {n});
  Arr x = randn({10, 24}, rng), y({10, 24});
  Arr dinp({6, 8}), dout = randn({6, 8}, rng), inp = randn({6, 8}, rng), w({8}, 1.0f), dw({8}), db({8}),
      mean({6}), rstd({6}, 1.0f);
  auto& prof = vit::kernels::OpProfiler::instance();
  prof.enable(true);
  vit::kernels::adamw_update(cpu_ctx(), p.t, m.t, v.t, g, low_bf16, vit::kernels::AdamWHyper{}, Tensor(), Tensor());
  vit::kernels::gelu_forward(cpu_ctx(), y.t, x.t);
  vit::kernels::gelu_forward(cpu_ctx(), y.t, x.t);
  vit::kernels::layernorm_backward(cpu_ctx(), dinp.t, dw.t, db.t, dout.t, inp.t, w.t, mean.t, rstd.t);
  vit::kernels::sum_squares_flag(cpu_ctx(), sumsq.t, flag.t, g, Tensor());
  prof.enable(false);
  std::map<std::string, vit::kernels::OpTime> got;
  for (const auto& t : prof.collect()) got[t.name] = t;
  BOOST_TEST_REQUIRE(got.size() == 4u);
  // param, m, v read and written (3 x 2 x 4000), grad read (4000), the bf16 copy written (2000).
  BOOST_TEST(got["adamw_update"].bytes == 30000.0);
  BOOST_TEST(got["gelu_forward"].calls == 2);
  BOOST_TEST(got["gelu_forward"].bytes == 2 * 2 * 960.0);  // two calls of 240 values in and out
  // dinp += (read and written), dout, inp (192 bytes each), weight (32), mean and rstd (24 each).
  BOOST_TEST(got["layernorm_backward"].bytes == 4 * 192.0 + 32 + 2 * 24);
  BOOST_TEST(got["sum_squares_flag"].bytes == 4000.0);
}

BOOST_AUTO_TEST_SUITE_END()
