// Every CPU backward kernel against central finite differences of its own
// forward kernel (tolerance and why: cpu_kernel_test_util.h), and the
// accumulate (+=) versus assign (=) contract of each gradient output:
// assigned outputs are prefilled with NaN (an element left unwritten fails),
// accumulated ones with random values that must survive underneath.
#define BOOST_TEST_MODULE kernels_cpu
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu_kernel_test_util.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"

using namespace vit_test;
namespace cpu = vit::kernels::cpu;
using vit::Rng;

BOOST_AUTO_TEST_SUITE(gradcheck)

BOOST_AUTO_TEST_CASE(matmul_backward) {
  Rng rng(11);
  const int64_t B = 2, T = 5, K = 8, N = 6;
  Arr inp = randn({B, T, K}, rng), w = randn({N, K}, rng, 0.5), bias = randn({N}, rng), r = randn({B, T, N}, rng);
  Arr out({B, T, N});
  auto loss = [&] {
    cpu::matmul_forward(cpu_ctx(), out.t, Tensor(), inp, w, bias);
    return weighted_sum(out, r);
  };
  Arr dinp({B, T, K}, kNaN), dw = randn({N, K}, rng, 0.5), db = randn({N}, rng, 0.5);
  const Arr dw0 = clone(dw), db0 = clone(db);
  cpu::matmul_backward(cpu_ctx(), dinp.t, dw.t, db.t, r, inp, w);
  check_gradient("matmul dinp", inp, as_double(dinp), loss);
  check_gradient("matmul dweight", w, added_to(dw, dw0), loss);
  check_gradient("matmul dbias", bias, added_to(db, db0), loss);

  // A second backward adds the same gradient again to dweight/dbias (+=) and
  // rewrites dinp with the same values (=). 1e-5 absolute: the fp32 rounding
  // of adding O(1) values twice.
  const Arr dinp1 = clone(dinp), dw1 = clone(dw), db1 = clone(db);
  cpu::matmul_backward(cpu_ctx(), dinp.t, dw.t, db.t, r, inp, w);
  for (int64_t i = 0; i < dinp.size(); ++i) BOOST_TEST(dinp[i] == dinp1[i]);
  for (int64_t i = 0; i < dw.size(); ++i) BOOST_TEST(std::abs((dw[i] - dw1[i]) - (dw1[i] - dw0[i])) <= 1e-5f);
  for (int64_t i = 0; i < db.size(); ++i) BOOST_TEST(std::abs((db[i] - db1[i]) - (db1[i] - db0[i])) <= 1e-5f);

  // Undefined dinp and dbias are skipped; dweight accumulates all the same.
  Arr dw_only = clone(dw0);
  cpu::matmul_backward(cpu_ctx(), Tensor(), dw_only.t, Tensor(), r, inp, w);
  for (int64_t i = 0; i < dw.size(); ++i) BOOST_TEST(dw_only[i] == dw1[i]);
}

// The MLP's first layer: matmul with the GELU epilogue, then gelu_backward on
// pre_gelu and matmul_backward, as the model chains them.
BOOST_AUTO_TEST_CASE(matmul_gelu_epilogue_chain) {
  Rng rng(12);
  const int64_t M = 7, K = 6, N = 9;
  Arr inp = randn({M, K}, rng), w = randn({N, K}, rng, 0.7), bias = randn({N}, rng, 0.5), r = randn({M, N}, rng);
  Arr pre({M, N}), out({M, N});
  auto loss = [&] {
    cpu::matmul_forward(cpu_ctx(), out.t, pre.t, inp, w, bias);
    return weighted_sum(out, r);
  };
  loss();
  Arr dpre({M, N}, kNaN), dinp({M, K}, kNaN), dw({N, K}), db({N});
  cpu::gelu_backward(cpu_ctx(), dpre.t, pre, r);
  cpu::matmul_backward(cpu_ctx(), dinp.t, dw.t, db.t, dpre, inp, w);
  check_gradient("matmul+gelu dinp", inp, as_double(dinp), loss);
  check_gradient("matmul+gelu dweight", w, as_double(dw), loss);
  check_gradient("matmul+gelu dbias", bias, as_double(db), loss);
}

BOOST_AUTO_TEST_CASE(gelu_backward) {
  Rng rng(13);
  Arr x = randn({4, 9}, rng, 2.0), r = randn({4, 9}, rng), y({4, 9});
  auto loss = [&] {
    cpu::gelu_forward(cpu_ctx(), y.t, x);
    return weighted_sum(y, r);
  };
  Arr dx({4, 9}, kNaN);
  cpu::gelu_backward(cpu_ctx(), dx.t, x, r);
  check_gradient("gelu dinp", x, as_double(dx), loss);
}

BOOST_AUTO_TEST_CASE(layernorm_backward) {
  Rng rng(14);
  const int64_t B = 2, T = 5, C = 8;
  Arr inp = randn({B, T, C}, rng, 1.0, 0.3), w = randn({C}, rng, 0.5, 1.0), bias = randn({C}, rng, 0.5);
  Arr r = randn({B, T, C}, rng), out({B, T, C}), mean({B, T}), rstd({B, T});
  auto loss = [&] {
    cpu::layernorm_forward(cpu_ctx(), out.t, mean.t, rstd.t, inp, w, bias, 1e-5f);
    return weighted_sum(out, r);
  };
  loss();
  Arr dinp = randn({B, T, C}, rng, 0.5), dw = randn({C}, rng, 0.5), db = randn({C}, rng, 0.5);
  const Arr dinp0 = clone(dinp), dw0 = clone(dw), db0 = clone(db);
  cpu::layernorm_backward(cpu_ctx(), dinp.t, dw.t, db.t, r, inp, w, mean, rstd);
  // All three accumulate: dinp holds the residual path's gradient already.
  check_gradient("layernorm dinp", inp, added_to(dinp, dinp0), loss);
  check_gradient("layernorm dweight", w, added_to(dw, dw0), loss);
  check_gradient("layernorm dbias", bias, added_to(db, db0), loss);
}

BOOST_AUTO_TEST_CASE(attention_backward) {
  struct Shape {
    int64_t B, T, C;
    int NH;
  };
  // Small shapes, a single head, odd sizes (HS = 2, T = 3) through the
  // generic head-size path, and HS = 64 through the compile-time one.
  for (const Shape s : {Shape{2, 5, 8, 2}, Shape{1, 4, 6, 1}, Shape{2, 3, 6, 3}, Shape{1, 3, 128, 2}}) {
    BOOST_TEST_CONTEXT("B " << s.B << " T " << s.T << " C " << s.C << " NH " << s.NH) {
      Rng rng(15 + s.NH);
      Arr qkv = randn({s.B, s.T, 3 * s.C}, rng), r = randn({s.B, s.T, s.C}, rng);
      Arr out({s.B, s.T, s.C}), aux({s.B, s.NH, s.T, s.T});
      auto loss = [&] {
        cpu::attention_forward(cpu_ctx(), out.t, aux.t, qkv, s.NH, vit::kernels::AttentionImpl::CuDNN);
        return weighted_sum(out, r);
      };
      loss();
      Arr dqkv({s.B, s.T, 3 * s.C}, kNaN);
      cpu::attention_backward(cpu_ctx(), dqkv.t, r, qkv, out, aux, s.NH, vit::kernels::AttentionImpl::CuDNN);
      check_gradient("attention dqkv", qkv, as_double(dqkv), loss);
    }
  }
}

BOOST_AUTO_TEST_CASE(embed_tokens_backward) {
  Rng rng(16);
  const int64_t B = 2, NP = 4, T = NP + 1, C = 8;
  // cls and pos in Hugging Face's shapes (1, 1, C) and (1, T, C).
  Arr pe = randn({B, NP, C}, rng), cls = randn({1, 1, C}, rng), pos = randn({1, T, C}, rng);
  Arr r = randn({B, T, C}, rng), x({B, T, C});
  auto loss = [&] {
    cpu::embed_tokens_forward(cpu_ctx(), x.t, pe, cls, pos);
    return weighted_sum(x, r);
  };
  Arr dpe({B, NP, C}, kNaN), dcls = randn({1, 1, C}, rng), dpos = randn({1, T, C}, rng);
  const Arr dcls0 = clone(dcls), dpos0 = clone(dpos);
  cpu::embed_tokens_backward(cpu_ctx(), dpe.t, dcls.t, dpos.t, r);
  check_gradient("embed_tokens dpatch_emb", pe, as_double(dpe), loss);
  check_gradient("embed_tokens dcls", cls, added_to(dcls, dcls0), loss);
  check_gradient("embed_tokens dpos", pos, added_to(dpos, dpos0), loss);
}

BOOST_AUTO_TEST_CASE(select_cls_backward) {
  Rng rng(17);
  const int64_t B = 3, T = 4, C = 5;
  Arr x = randn({B, T, C}, rng), r = randn({B, C}, rng), out({B, C});
  auto loss = [&] {
    cpu::select_cls_forward(cpu_ctx(), out.t, x);
    return weighted_sum(out, r);
  };
  Arr dx({B, T, C}, kNaN);
  cpu::select_cls_backward(cpu_ctx(), dx.t, r);
  BOOST_TEST(all_finite(dx));  // the non-class tokens are written (zeros), not left alone
  check_gradient("select_cls dx", x, as_double(dx), loss);
}

BOOST_AUTO_TEST_CASE(softmax_cross_entropy_gradient) {
  Rng rng(18);
  const int64_t B = 4, K = 7;
  const float grad_scale = 0.37f;
  Arr logits = randn({B, K}, rng, 2.0), losses({B}), dlogits({B, K}, kNaN);
  std::vector<int32_t> labels = {3, 0, 6, 3}, predicted(B, -1);
  const Tensor lab(labels.data(), DType::F32, Device::CPU, {B});  // int32 data: DType has no int32
  const Tensor pred(predicted.data(), DType::F32, Device::CPU, {B});
  // L = grad_scale * sum_b loss_b, whose gradient dlogits must be.
  auto loss = [&] {
    cpu::softmax_cross_entropy(cpu_ctx(), losses.t, pred, Tensor(), logits, lab, grad_scale);
    double s = 0.0;
    for (int64_t b = 0; b < B; ++b) s += losses[b];
    return grad_scale * s;
  };
  cpu::softmax_cross_entropy(cpu_ctx(), losses.t, pred, dlogits.t, logits, lab, grad_scale);
  check_gradient("cross_entropy dlogits", logits, as_double(dlogits), loss);
}

BOOST_AUTO_TEST_SUITE_END()
