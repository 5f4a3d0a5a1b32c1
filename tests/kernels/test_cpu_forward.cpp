// Forward results of the CPU kernels against straightforward double-precision
// loops written here, plus the thread-count independence of the reductions.
// Each tolerance is stated where it is used, from the fp32 rounding of the
// computation it checks.
#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_kernel_test_util.h"
#include "kernels/attention.h"
#include "kernels/cpu_threads.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"
#include "kernels/residual.h"

using namespace vit_test;
namespace cpu = vit::kernels::cpu;
using vit::Rng;

BOOST_AUTO_TEST_SUITE(forward)

BOOST_AUTO_TEST_CASE(matmul_forward_against_double_loops) {
  Rng rng(21);
  const int64_t M = 37, K = 19, N = 23;  // odd sizes: no kernel blocking lines up
  Arr inp = randn({M, K}, rng), w = randn({N, K}, rng), bias = randn({N}, rng);
  Arr out({M, N}, kNaN), pre({M, N}, kNaN), out_gelu({M, N}, kNaN), out_nobias({M, N}, kNaN);
  cpu::matmul_forward(cpu_ctx(), out.t, Tensor(), inp, w, bias);
  cpu::matmul_forward(cpu_ctx(), out_gelu.t, pre.t, inp, w, bias);
  cpu::matmul_forward(cpu_ctx(), out_nobias.t, Tensor(), inp, w, Tensor());
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double dot = 0.0, magnitude = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        dot += static_cast<double>(inp[m * K + k]) * w[n * K + k];
        magnitude += std::abs(static_cast<double>(inp[m * K + k]) * w[n * K + k]);
      }
      const double ref = dot + bias[n];
      // fp32 summation of K products: error <= K * 2^-24 * sum |terms|
      // (~1.1e-6 here); 2e-6 * (magnitude + |b|) bounds it.
      const double tol = 2e-6 * (magnitude + std::abs(bias[n])) + 1e-7;
      BOOST_TEST(std::abs(out[m * N + n] - ref) <= tol);
      BOOST_TEST(std::abs(out_nobias[m * N + n] - dot) <= tol);
      BOOST_TEST(pre[m * N + n] == out[m * N + n]);  // the same product, kept for backward
      // GELU adds its own ~2e-7 * max(1, |x|) (gelu.cpp) on top.
      BOOST_TEST(std::abs(out_gelu[m * N + n] - gelu_ref(ref)) <= tol + 4e-7 * std::max(1.0, std::abs(ref)));
    }
  }
}

BOOST_AUTO_TEST_CASE(matmul_forward_with_residual_is_the_product_then_residual_add) {
  // The block's residual add inside matmul_forward gives, on the CPU, the
  // bits of the product followed by residual_add (what the model did before
  // the GPU fused it into the GEMM), with and without a bias.
  Rng rng(22);
  const int64_t M = 29, K = 17, N = 21;
  Arr inp = randn({M, K}, rng), w = randn({N, K}, rng), bias = randn({N}, rng), res = randn({M, N}, rng);
  for (bool with_bias : {true, false}) {
    const Tensor b = with_bias ? bias.t : Tensor();
    Arr fused({M, N}, kNaN), product({M, N}, kNaN), apart({M, N}, kNaN);
    cpu::matmul_forward(cpu_ctx(), fused.t, Tensor(), inp, w, b, res);
    cpu::matmul_forward(cpu_ctx(), product.t, Tensor(), inp, w, b);
    cpu::residual_add(cpu_ctx(), apart.t, res, product);
    int differ = 0, moved = 0;
    for (int64_t i = 0; i < M * N; ++i) {
      differ += std::memcmp(&fused[i], &apart[i], sizeof(float)) != 0;
      moved += fused[i] != product[i];
    }
    BOOST_TEST(differ == 0);
    BOOST_TEST(moved > M * N / 2);  // the residual was added
  }
}

BOOST_AUTO_TEST_CASE(gelu_against_double_erf) {
  // Every 1/1024 from -12 to 12: the whole range where erf is not +-1 and beyond.
  const int64_t n = 24 * 1024 + 1;
  Arr x({n}), y({n}, kNaN), dy({n}, kNaN), ones({n}, 1.0f);
  for (int64_t i = 0; i < n; ++i) x[i] = -12.0f + static_cast<float>(i) / 1024.0f;
  cpu::gelu_forward(cpu_ctx(), y.t, x);
  cpu::gelu_backward(cpu_ctx(), dy.t, x, ones);
  double worst_y = 0.0, worst_dy = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    const double cdf = 0.5 * (1.0 + std::erf(v / std::sqrt(2.0)));
    const double dref = cdf + v * std::exp(-0.5 * v * v) / std::sqrt(2.0 * M_PI);
    worst_y = std::max(worst_y, std::abs(y[i] - v * cdf) / std::max(1.0, std::abs(v)));
    worst_dy = std::max(worst_dy, std::abs(dy[i] - dref));
  }
  BOOST_TEST_MESSAGE("gelu: max error / max(1,|x|) " << worst_y << ", gelu' max error " << worst_dy);
  // The erfc approximation is good to 1.5e-7 absolute (A&S 7.1.26), plus
  // fp32 rounding of a handful of operations: 4e-7 and 6e-7 leave ~2x room.
  BOOST_TEST(worst_y <= 4e-7);
  BOOST_TEST(worst_dy <= 6e-7);
  // Special values: exact zero, NaN propagates, +inf stays inf, far tail ~0.
  Arr s({4}), gs({4});
  s[0] = 0.0f;
  s[1] = std::numeric_limits<float>::quiet_NaN();
  s[2] = std::numeric_limits<float>::infinity();
  s[3] = -30.0f;
  cpu::gelu_forward(cpu_ctx(), gs.t, s);
  BOOST_TEST(gs[0] == 0.0f);
  BOOST_TEST(std::isnan(gs[1]));
  BOOST_TEST(gs[2] == std::numeric_limits<float>::infinity());
  BOOST_TEST(std::abs(gs[3]) < 1e-30f);
}

// The backward with recompute (train.recompute_gelu) must give the forward's
// output and the plain backward's gradient bit for bit, also written over
// dout itself, as the model calls it; over several thread chunks and a tail.
BOOST_AUTO_TEST_CASE(gelu_backward_recompute_is_forward_and_backward_bitwise) {
  Rng rng(27);
  const int64_t n = 5 * 4096 + 77;
  Arr x = randn({n}, rng, 3.0), g = randn({n}, rng);
  Arr y({n}, kNaN), dx({n}, kNaN), y2({n}, kNaN), dx2({n}, kNaN), dx3({n}, kNaN);
  cpu::gelu_forward(cpu_ctx(), y.t, x);
  cpu::gelu_backward(cpu_ctx(), dx.t, x, g);
  cpu::gelu_backward_recompute(cpu_ctx(), dx2.t, y2.t, x, g);
  Arr inplace({n});
  for (int64_t i = 0; i < n; ++i) inplace[i] = g[i];
  cpu::gelu_backward_recompute(cpu_ctx(), dx3.t, inplace.t, x, inplace);
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) {
    differ += y2[i] != y[i] || dx2[i] != dx[i] || inplace[i] != y[i] || dx3[i] != dx[i];
  }
  BOOST_TEST(differ == 0);
}

// The GELU backward's bias gradient (fc1's, gelu.h): dbias (+)= the column
// sums of dinp, which stays the plain backward's bits; assigned (=) when not
// accumulating, also with recompute; a count that rows of dbias' length do
// not divide is refused.
BOOST_AUTO_TEST_CASE(gelu_backward_sums_the_bias_gradient) {
  Rng rng(41);
  const int64_t rows = 3 * 197, C = 72, n = rows * C;
  Arr x = randn({n}, rng, 3.0), g = randn({n}, rng);
  Arr dx({n}, kNaN), dx2({n}, kNaN), dx3({n}, kNaN), y3({n}, kNaN);
  Arr db = randn({C}, rng), db0({C}), db3({C}, kNaN);
  for (int64_t c = 0; c < C; ++c) db0[c] = db[c];
  cpu::gelu_backward(cpu_ctx(), dx.t, x, g);
  cpu::gelu_backward(cpu_ctx(), dx2.t, x, g, db.t, true);
  cpu::gelu_backward_recompute(cpu_ctx(), dx3.t, y3.t, x, g, db3.t, false);
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += dx2[i] != dx[i] || dx3[i] != dx[i];
  BOOST_TEST(differ == 0);
  double worst = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    double s = 0.0;
    for (int64_t r = 0; r < rows; ++r) s += dx[r * C + c];
    worst = std::max({worst, std::abs(db[c] - (db0[c] + s)), std::abs(db3[c] - s)});
  }
  BOOST_TEST(worst <= 1e-4);  // fp32 results of sums of ~|25|: a few ulp
  Arr bad({7});
  BOOST_CHECK_THROW(cpu::gelu_backward(cpu_ctx(), dx.t, x, g, bad.t, true), vit::Error);
}

// An input-gradient-only call and a weight-gradient-only call add up to the
// one call, bit for bit (the model splits fc2's backward that way).
BOOST_AUTO_TEST_CASE(matmul_backward_in_two_calls_is_the_same_bits) {
  Rng rng(28);
  const int64_t M = 45, K = 29, N = 31;
  Arr inp = randn({M, K}, rng), w = randn({N, K}, rng), dout = randn({M, N}, rng);
  Arr dinp1({M, K}, kNaN), dw1 = randn({N, K}, rng), db1 = randn({N}, rng);
  Arr dinp2({M, K}, kNaN), dw2({N, K}), db2({N});
  for (int64_t i = 0; i < N * K; ++i) dw2[i] = dw1[i];
  for (int64_t i = 0; i < N; ++i) db2[i] = db1[i];
  cpu::matmul_backward(cpu_ctx(), dinp1.t, dw1.t, db1.t, dout, inp, w);
  cpu::matmul_backward(cpu_ctx(), dinp2.t, Tensor(), Tensor(), dout, Tensor(), w);
  cpu::matmul_backward(cpu_ctx(), Tensor(), dw2.t, db2.t, dout, inp, w);
  int64_t differ = 0;
  for (int64_t i = 0; i < M * K; ++i) differ += dinp1[i] != dinp2[i];
  for (int64_t i = 0; i < N * K; ++i) differ += dw1[i] != dw2[i];
  for (int64_t i = 0; i < N; ++i) differ += db1[i] != db2[i];
  BOOST_TEST(differ == 0);
}

// In place, as the model's MLP backward runs them (matmul.h, gelu.h): fc2's
// input gradient written over its input (the GELU output), GELU's input
// gradient over the GELU's input, with and without the recompute and the bias
// sums: the bits of separate buffers. dinp over out or dout is refused.
BOOST_AUTO_TEST_CASE(mlp_backward_in_place_is_the_same_bits) {
  Rng rng(53);
  const int64_t M = 3 * 197, K = 96, N = 40;
  Arr inp = randn({M, K}, rng), w = randn({N, K}, rng), dout = randn({M, N}, rng);
  Arr dinp({M, K}, kNaN), dw = randn({N, K}, rng), db = randn({N}, rng);
  Arr same({M, K}), dw2({N, K}), db2({N});
  for (int64_t i = 0; i < M * K; ++i) same[i] = inp[i];
  for (int64_t i = 0; i < N * K; ++i) dw2[i] = dw[i];
  for (int64_t i = 0; i < N; ++i) db2[i] = db[i];
  cpu::matmul_backward(cpu_ctx(), dinp.t, dw.t, db.t, dout, inp, w);
  cpu::matmul_backward(cpu_ctx(), same.t, dw2.t, db2.t, dout, same, w);
  int64_t differ = 0;
  for (int64_t i = 0; i < M * K; ++i) differ += same[i] != dinp[i];
  for (int64_t i = 0; i < N * K; ++i) differ += dw2[i] != dw[i];
  for (int64_t i = 0; i < N; ++i) differ += db2[i] != db[i];
  BOOST_TEST(differ == 0);

  const int64_t n = M * K;
  Arr x = randn({n}, rng, 3.0), g = randn({n}, rng);
  Arr dx({n}, kNaN), y({n}, kNaN), dxr({n}, kNaN), dbx({K}, kNaN), dbr({K}, kNaN);
  cpu::gelu_backward(cpu_ctx(), dx.t, x, g, dbx.t, false);
  cpu::gelu_backward_recompute(cpu_ctx(), dxr.t, y.t, x, g, dbr.t, false);
  Arr x1({n}), x2({n}), g2({n}), db1({K}, kNaN), db2r({K}, kNaN);
  for (int64_t i = 0; i < n; ++i) x1[i] = x2[i] = x[i], g2[i] = g[i];
  cpu::gelu_backward(cpu_ctx(), x1.t, x1, g, db1.t, false);                // dinp over inp
  cpu::gelu_backward_recompute(cpu_ctx(), x2.t, g2.t, x2, g2, db2r.t, false);  // and out over dout
  differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += x1[i] != dx[i] || x2[i] != dxr[i] || g2[i] != y[i];
  for (int64_t c = 0; c < K; ++c) differ += db1[c] != dbx[c] || db2r[c] != dbr[c];
  BOOST_TEST(differ == 0);
  BOOST_CHECK_THROW(cpu::gelu_backward_recompute(cpu_ctx(), g2.t, y.t, x, g2), vit::Error);  // dinp over dout
}

// accumulate = false (a step's first backward, set_assign_grads) writes the
// parameter gradients over whatever the buffers held: the values of adding
// to zeroed ones. matmul, LayerNorm and the token embeddings.
BOOST_AUTO_TEST_CASE(parameter_gradients_assigned_are_added_to_zero) {
  Rng rng(29);
  const int64_t M = 37, K = 19, N = 23, B = 3, T = 5, C = 8;
  auto garbage = [&](std::initializer_list<int64_t> dims) { return randn(dims, rng, 100.0); };
  auto same = [](const Arr& a, const Arr& b) {
    return std::equal(a.v.begin(), a.v.end(), b.v.begin(), b.v.end());
  };
  {  // matmul
    Arr inp = randn({M, K}, rng), w = randn({N, K}, rng), dout = randn({M, N}, rng);
    Arr dw0({N, K}), db0({N}), dinp0({M, K});
    Arr dw1 = garbage({N, K}), db1 = garbage({N}), dinp1({M, K});
    cpu::matmul_backward(cpu_ctx(), dinp0.t, dw0.t, db0.t, dout, inp, w);
    cpu::matmul_backward(cpu_ctx(), dinp1.t, dw1.t, db1.t, dout, inp, w, false);
    BOOST_TEST(same(dw1, dw0));
    BOOST_TEST(same(db1, db0));
    BOOST_TEST(same(dinp1, dinp0));
  }
  {  // LayerNorm: dinp still accumulates
    Arr x = randn({M, C}, rng), w = randn({C}, rng), b = randn({C}, rng), dout = randn({M, C}, rng);
    Arr y({M, C}), mean({M}), rstd({M});
    cpu::layernorm_forward(cpu_ctx(), y.t, mean.t, rstd.t, x, w, b, 1e-5f);
    Arr dinp0 = randn({M, C}, rng), dinp1({M, C});
    for (int64_t i = 0; i < M * C; ++i) dinp1[i] = dinp0[i];
    Arr dw0({C}), db0({C}), dw1 = garbage({C}), db1 = garbage({C});
    cpu::layernorm_backward(cpu_ctx(), dinp0.t, dw0.t, db0.t, dout, x, w, mean, rstd);
    cpu::layernorm_backward(cpu_ctx(), dinp1.t, dw1.t, db1.t, dout, x, w, mean, rstd, false);
    BOOST_TEST(same(dw1, dw0));
    BOOST_TEST(same(db1, db0));
    BOOST_TEST(same(dinp1, dinp0));
    // dinp_colsum: the column sums of dinp after the += (matmul_backward's
    // bias gradient of it, bit for bit), assigned over garbage and added.
    Arr dinp2 = randn({M, C}, rng), dinp3({M, C}), dw2({C}), db2({C}), cs = garbage({C}), cs_acc({C}), dbm({C});
    for (int64_t i = 0; i < M * C; ++i) dinp3[i] = dinp2[i];
    for (int64_t c = 0; c < C; ++c) cs_acc[c] = 0.5f * static_cast<float>(c);
    cpu::layernorm_backward(cpu_ctx(), dinp2.t, dw2.t, db2.t, dout, x, w, mean, rstd, false, cs.t, false);
    Arr wm = randn({C, C}, rng), dwm({C, C});
    cpu::matmul_backward(cpu_ctx(), Tensor(), dwm.t, dbm.t, dinp2, x, wm, false);
    BOOST_TEST(same(cs, dbm));
    double worst = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      double ref = 0.0;
      for (int64_t m = 0; m < M; ++m) ref += dinp2[m * C + c];
      worst = std::max(worst, std::fabs(cs[c] - ref) / (1.0 + std::fabs(ref)));
    }
    BOOST_TEST(worst < 1e-6);
    cpu::layernorm_backward(cpu_ctx(), dinp3.t, dw2.t, db2.t, dout, x, w, mean, rstd, false, cs_acc.t, true);
    for (int64_t c = 0; c < C; ++c) BOOST_TEST(cs_acc[c] == 0.5f * static_cast<float>(c) + cs[c]);
  }
  {  // token embeddings
    Arr dx = randn({B, T, C}, rng), dpe0({B, T - 1, C}), dpe1({B, T - 1, C});
    Arr dcls0({C}), dpos0({T, C}), dcls1 = garbage({C}), dpos1 = garbage({T, C});
    cpu::embed_tokens_backward(cpu_ctx(), dpe0.t, dcls0.t, dpos0.t, dx);
    cpu::embed_tokens_backward(cpu_ctx(), dpe1.t, dcls1.t, dpos1.t, dx, false);
    BOOST_TEST(same(dcls1, dcls0));
    BOOST_TEST(same(dpos1, dpos0));
    BOOST_TEST(same(dpe1, dpe0));
  }
}

BOOST_AUTO_TEST_CASE(layernorm_forward_against_double_loops) {
  Rng rng(22);
  const int64_t M = 6, C = 37;
  // A mean of 50 against a spread of 1: E[x^2] - mean^2 would lose ~3 digits.
  Arr inp = randn({M, C}, rng, 1.0, 50.0), w = randn({C}, rng), bias = randn({C}, rng);
  Arr out({M, C}, kNaN), mean({M}, kNaN), rstd({M}, kNaN);
  const float eps = 1e-12f;  // the ViT's
  cpu::layernorm_forward(cpu_ctx(), out.t, mean.t, rstd.t, inp, w, bias, eps);
  for (int64_t m = 0; m < M; ++m) {
    double mu = 0.0, var = 0.0;
    for (int64_t c = 0; c < C; ++c) mu += inp[m * C + c];
    mu /= C;
    for (int64_t c = 0; c < C; ++c) var += (inp[m * C + c] - mu) * (inp[m * C + c] - mu);
    var /= C;
    const double rs = 1.0 / std::sqrt(var + eps);
    // mean and rstd: double sums rounded once to fp32 (2^-24 relative), 1e-6.
    BOOST_TEST(std::abs(mean[m] - mu) <= 1e-6 * std::abs(mu));
    BOOST_TEST(std::abs(rstd[m] - rs) <= 1e-6 * rs);
    for (int64_t c = 0; c < C; ++c) {
      const double ref = (inp[m * C + c] - mu) * rs * w[c] + bias[c];
      // x - mean in fp32 is exact to ~ulp(50) = 4e-6 absolute, i.e. ~4e-6 of
      // xhat (std 1): 1e-5 * (|xhat w| + 1) covers it with room.
      BOOST_TEST(std::abs(out[m * C + c] - ref) <= 1e-5 * (std::abs((ref - bias[c])) + 1.0));
    }
  }
}

// The attention backward's QKV bias gradient (attention.h): dqkv keeps the
// plain call's bits; dbias += its column sums over (B, T), or = when not
// accumulating; a dbias of the wrong length is refused.
BOOST_AUTO_TEST_CASE(attention_backward_sums_the_qkv_bias_gradient) {
  Rng rng(29);
  const int64_t B = 2, T = 7, C = 12;
  const int NH = 3;
  Arr qkv = randn({B, T, 3 * C}, rng, 1.5), out({B, T, C}, kNaN), aux({B, NH, T, T}, kNaN), g = randn({B, T, C}, rng);
  cpu::attention_forward(cpu_ctx(), out.t, aux.t, qkv, NH, vit::kernels::AttentionImpl::Cublas);
  Arr dx({B, T, 3 * C}, kNaN), dx2({B, T, 3 * C}, kNaN), dx3({B, T, 3 * C}, kNaN);
  Arr db = randn({3 * C}, rng), db0({3 * C}), db3({3 * C}, kNaN);
  for (int64_t c = 0; c < 3 * C; ++c) db0[c] = db[c];
  const auto impl = vit::kernels::AttentionImpl::Cublas;
  cpu::attention_backward(cpu_ctx(), dx.t, g, qkv, out, aux, NH, impl);
  cpu::attention_backward(cpu_ctx(), dx2.t, g, qkv, out, aux, NH, impl, db.t, true);
  cpu::attention_backward(cpu_ctx(), dx3.t, g, qkv, out, aux, NH, impl, db3.t, false);
  int64_t differ = 0;
  for (int64_t i = 0; i < B * T * 3 * C; ++i) differ += dx2[i] != dx[i] || dx3[i] != dx[i];
  BOOST_TEST(differ == 0);
  double worst = 0.0;
  for (int64_t c = 0; c < 3 * C; ++c) {
    double sum = 0.0;
    for (int64_t r = 0; r < B * T; ++r) sum += dx[r * 3 * C + c];
    worst = std::max({worst, std::abs(db[c] - (db0[c] + sum)), std::abs(db3[c] - sum)});
  }
  BOOST_TEST(worst <= 1e-5);
  Arr bad({C});
  BOOST_CHECK_THROW(cpu::attention_backward(cpu_ctx(), dx.t, g, qkv, out, aux, NH, impl, bad.t, true), vit::Error);
}

// HS = 4 takes the generic head-size path, HS = 64 the compile-time one.
BOOST_DATA_TEST_CASE(attention_forward_against_double_loops, boost::unit_test::data::make({12, 128}), C) {
  Rng rng(23);
  const int64_t B = 2, T = 7;
  const int NH = C == 12 ? 3 : 2;
  const int64_t HS = C / NH;
  Arr qkv = randn({B, T, 3 * C}, rng, 1.5), out({B, T, C}, kNaN), aux({B, NH, T, T}, kNaN);
  cpu::attention_forward(cpu_ctx(), out.t, aux.t, qkv, NH, vit::kernels::AttentionImpl::Cublas);
  const double scale = 1.0 / std::sqrt(static_cast<double>(HS));
  auto at = [&](int64_t b, int64_t t, int64_t ch) { return static_cast<double>(qkv[(b * T + t) * 3 * C + ch]); };
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> p(T);
        double mx = -1e300, sum = 0.0, psum = 0.0;
        for (int64_t s = 0; s < T; ++s) {
          double d = 0.0;
          for (int64_t i = 0; i < HS; ++i) d += at(b, t, h * HS + i) * at(b, s, C + h * HS + i);
          p[s] = d * scale;
          mx = std::max(mx, p[s]);
        }
        for (int64_t s = 0; s < T; ++s) sum += (p[s] = std::exp(p[s] - mx));
        for (int64_t s = 0; s < T; ++s) {
          p[s] /= sum;
          const float got = aux[((b * NH + h) * T + t) * T + s];
          psum += got;
          // Probabilities in [0, 1]: fp32 scores (|s| ~ 5) carry ~1e-6
          // relative error into exp; 2e-6 absolute.
          BOOST_TEST(std::abs(got - p[s]) <= 2e-6);
        }
        BOOST_TEST(std::abs(psum - 1.0) <= 1e-6);  // rows of P sum to 1
        for (int64_t i = 0; i < HS; ++i) {
          double o = 0.0;
          for (int64_t s = 0; s < T; ++s) o += p[s] * at(b, s, 2 * C + h * HS + i);
          // A convex combination of O(1.5) values with 2e-6-accurate weights.
          BOOST_TEST(std::abs(out[(b * T + t) * C + h * HS + i] - o) <= 2e-5);
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(cross_entropy_loss_argmax_and_stability) {
  const int64_t B = 4, K = 4;
  // Row 1: a tie between classes 1 and 2 (lowest index wins); row 2: all
  // equal; row 3: logits of +-1000 that overflow a naive exp.
  Arr logits({B, K});
  const float rows[B][K] = {{0.5f, -1.0f, 2.0f, 0.25f}, {1.0f, 3.0f, 3.0f, 0.0f}, {5.0f, 5.0f, 5.0f, 5.0f},
                            {1000.0f, 0.0f, -1000.0f, 999.0f}};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < K; ++k) logits[b * K + k] = rows[b][k];
  std::vector<int32_t> labels = {2, 0, 3, 1}, predicted(B, -7);
  const Tensor lab(labels.data(), DType::F32, Device::CPU, {B});
  const Tensor pred(predicted.data(), DType::F32, Device::CPU, {B});
  Arr losses({B}, kNaN), dlogits({B, K}, kNaN);
  const float gs = 0.25f;
  cpu::softmax_cross_entropy(cpu_ctx(), losses.t, pred, dlogits.t, logits, lab, gs);
  BOOST_TEST(predicted == (std::vector<int32_t>{2, 1, 0, 0}), boost::test_tools::per_element());
  for (int64_t b = 0; b < B; ++b) {
    double mx = -1e300, sum = 0.0;
    for (int64_t k = 0; k < K; ++k) mx = std::max(mx, static_cast<double>(rows[b][k]));
    for (int64_t k = 0; k < K; ++k) sum += std::exp(rows[b][k] - mx);
    const double lse = mx + std::log(sum);
    // Computed in double and rounded once: 2^-24 relative (plus a floor).
    BOOST_TEST(std::abs(losses[b] - (lse - rows[b][labels[b]])) <= 1e-6 * std::abs(lse) + 1e-7);
    double row_sum = 0.0;
    for (int64_t k = 0; k < K; ++k) {
      const double ref = (std::exp(rows[b][k] - lse) - (k == labels[b] ? 1.0 : 0.0)) * gs;
      BOOST_TEST(std::abs(dlogits[b * K + k] - ref) <= 1e-7);
      row_sum += dlogits[b * K + k];
    }
    BOOST_TEST(std::abs(row_sum) <= 1e-7);  // softmax - onehot sums to 0
  }
  BOOST_TEST(std::abs(losses[3] - 1000.3132617f) <= 1e-3f);  // lse(1000, 999) - 0, finite
}

BOOST_AUTO_TEST_CASE(patchify_index_order_and_normalisation) {
  const int64_t B = 2, H = 4, W = 6, ps = 2, NP = (H / ps) * (W / ps), P = 3 * ps * ps;
  std::vector<uint8_t> img(static_cast<size_t>(B * H * W * 3));
  auto pixel = [](int64_t b, int64_t y, int64_t x, int64_t c) {
    return static_cast<uint8_t>((b * 97 + y * 31 + x * 7 + c * 3) % 256);
  };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x)
        for (int64_t c = 0; c < 3; ++c) img[((b * H + y) * W + x) * 3 + c] = pixel(b, y, x, c);
  // Three bytes with known normalised values: 0 -> -1, 255 -> 1, 51 -> -0.6.
  img[0] = 0;                                        // (b0, y0, x0, c0)
  img[((1 * H + 3) * W + 5) * 3 + 2] = 255;           // (b1, y3, x5, c2)
  img[((0 * H + 2) * W + 3) * 3 + 1] = 51;            // (b0, y2, x3, c1)
  const Tensor images(img.data(), DType::F32, Device::CPU, {B, H, W, 3});  // uint8 data: no DType for it
  Arr patches({B, NP, P}, kNaN);
  cpu::patchify(cpu_ctx(), patches.t, images, static_cast<int>(ps));
  BOOST_TEST(all_finite(patches));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < NP; ++i)
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t ky = 0; ky < ps; ++ky)
          for (int64_t kx = 0; kx < ps; ++kx) {
            const int64_t y = (i / (W / ps)) * ps + ky, x = (i % (W / ps)) * ps + kx;
            const float v = img[((b * H + y) * W + x) * 3 + c];
            // The contract's expression evaluated in fp32, the same bits expected.
            BOOST_TEST(patches[(b * NP + i) * P + c * ps * ps + ky * ps + kx] == (v / 255.0f - 0.5f) / 0.5f);
          }
  BOOST_TEST(patches[0] == -1.0f);
  // (b1, y3, x5, c2): patch py 1, px 2 -> i = 5; P index 2*4 + 1*2 + 1 = 11.
  BOOST_TEST(patches[(1 * NP + 5) * P + 11] == 1.0f);
  // (b0, y2, x3, c1): patch py 1, px 1 -> i = 4; P index 1*4 + 0*2 + 1 = 5.
  BOOST_TEST(std::abs(patches[(0 * NP + 4) * P + 5] - (-0.6f)) <= 1e-7f);
}

BOOST_AUTO_TEST_CASE(embed_tokens_select_cls_and_residual) {
  Rng rng(24);
  const int64_t B = 3, NP = 4, T = NP + 1, C = 6;
  Arr pe = randn({B, NP, C}, rng), cls = randn({C}, rng), pos = randn({T, C}, rng), x({B, T, C}, kNaN);
  cpu::embed_tokens_forward(cpu_ctx(), x.t, pe, cls, pos);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        const float src = t == 0 ? cls[c] : pe[(b * NP + t - 1) * C + c];
        BOOST_TEST(x[(b * T + t) * C + c] == src + pos[t * C + c]);  // one fp32 add: exact match
      }
  Arr head({B, C}, kNaN);
  cpu::select_cls_forward(cpu_ctx(), head.t, x);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) BOOST_TEST(head[b * C + c] == x[b * T * C + c]);

  Arr a = randn({B, T, C}, rng), b2 = randn({B, T, C}, rng), sum({B, T, C}, kNaN);
  cpu::residual_add(cpu_ctx(), sum.t, a, b2);
  for (int64_t i = 0; i < sum.size(); ++i) BOOST_TEST(sum[i] == a[i] + b2[i]);
  const Arr a0 = clone(a);
  cpu::residual_add(cpu_ctx(), a.t, a, b2);  // out aliasing a
  for (int64_t i = 0; i < a.size(); ++i) BOOST_TEST(a[i] == sum[i]);
  cpu::accumulate(cpu_ctx(), a.t, a0);
  for (int64_t i = 0; i < a.size(); ++i) BOOST_TEST(a[i] == sum[i] + a0[i]);
  // add_gradient: += src, or = 0 + src (over NaN).
  Arr g = clone(a0), g0 = clone(a0);
  cpu::add_gradient(cpu_ctx(), g.t, b2, true);
  for (int64_t i = 0; i < g.size(); ++i) BOOST_TEST(g[i] == g0[i] + b2[i]);
  Arr z({B, T, C}, kNaN);
  cpu::add_gradient(cpu_ctx(), z.t, b2, false);
  for (int64_t i = 0; i < z.size(); ++i) BOOST_TEST(z[i] == b2[i]);
}

// The reductions that sum over rows or elements are built to give the same
// bits whatever the thread count; check 1, 2 and 3 threads (3 on 2 cores
// still splits the work three ways). Sizes exceed the parallel threshold.
BOOST_AUTO_TEST_CASE(reductions_do_not_depend_on_thread_count) {
  Rng rng(25);
  const int64_t M = 1024, C = 48, N = 80, T = 17, B = M / 16;
  Arr inp = randn({M, C}, rng), w = randn({C}, rng), bias = randn({C}, rng), g = randn({M, C}, rng);
  Arr out({M, C}), mean({M}), rstd({M});
  cpu::layernorm_forward(cpu_ctx(), out.t, mean.t, rstd.t, inp, w, bias, 1e-5f);
  Arr mw = randn({N, C}, rng), gout = randn({M, N}, rng);
  Arr big = randn({300000}, rng);
  Arr tokens = randn({B, T, C}, rng);

  auto run = [&](int threads) {
    vit::kernels::set_cpu_threads(threads);
    std::vector<float> r;
    Arr dinp({M, C}), dw({C}), db({C}), mdw({N, C}), mdb({N}), ss({1}), dpe({B, T - 1, C}), dcls({C}), dpos({T, C});
    cpu::layernorm_backward(cpu_ctx(), dinp.t, dw.t, db.t, g, inp, w, mean, rstd);
    cpu::matmul_backward(cpu_ctx(), Tensor(), mdw.t, mdb.t, gout, inp, mw);
    cpu::sum_squares(cpu_ctx(), ss.t, big);
    cpu::embed_tokens_backward(cpu_ctx(), dpe.t, dcls.t, dpos.t, tokens);
    for (const Arr* a : {&dinp, &dw, &db, &mdb, &ss, &dcls, &dpos}) r.insert(r.end(), a->v.begin(), a->v.end());
    return r;
  };
  const std::vector<float> one = run(1), two = run(2), three = run(3);
  vit::kernels::set_cpu_threads(0);
  BOOST_TEST(one == two, boost::test_tools::per_element());
  BOOST_TEST(one == three, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()
