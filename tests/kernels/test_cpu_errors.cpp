// The CPU kernels refuse wrong shapes, dtypes and devices with a vit::Error
// naming the op and the argument, before touching any memory.
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "cpu_kernel_test_util.h"
#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/cast.h"
#include "kernels/cross_entropy.h"
#include "kernels/embedding.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"
#include "kernels/residual.h"

using namespace vit_test;
namespace cpu = vit::kernels::cpu;
namespace kn = vit::kernels;

namespace {

// True when the error message names every one of `words`.
struct Names {
  std::vector<std::string> words;
  bool operator()(const vit::Error& e) const {
    const std::string msg = e.what();
    for (const auto& w : words) {
      if (msg.find(w) == std::string::npos) {
        BOOST_TEST_MESSAGE("message lacks '" << w << "': " << msg);
        return false;
      }
    }
    return true;
  }
};

// The same memory relabelled: another dtype, or claimed to be on the GPU.
Tensor as_dtype(const Tensor& t, DType d) {
  Tensor r = t;
  r.dtype = d;
  return r;
}
Tensor on_gpu(const Tensor& t) {
  Tensor r = t;
  r.device = Device::CUDA;
  return r;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(errors)

BOOST_AUTO_TEST_CASE(matmul_refuses_mismatches) {
  Arr inp({2, 5, 8}), w({6, 8}), b({6}), out({2, 5, 6}), pre({2, 5, 6}), dw({6, 8}), db({6}), dinp({2, 5, 8});
  Arr w_bad({6, 7}), b_bad({5}), out_bad({2, 4, 6}), dw_bad({8, 6});
  const auto& c = cpu_ctx();
  BOOST_CHECK_NO_THROW(cpu::matmul_forward(c, out.t, pre.t, inp, w, b));
  BOOST_CHECK_EXCEPTION(cpu::matmul_forward(c, out.t, Tensor(), inp, w_bad, b), vit::Error,
                        (Names{{"matmul_forward", "inp", "K"}}));
  BOOST_CHECK_EXCEPTION(cpu::matmul_forward(c, out.t, Tensor(), inp, w, b_bad), vit::Error,
                        (Names{{"matmul_forward", "bias"}}));
  BOOST_CHECK_EXCEPTION(cpu::matmul_forward(c, out_bad.t, Tensor(), inp, w, b), vit::Error,
                        (Names{{"matmul_forward", "out"}}));
  BOOST_CHECK_EXCEPTION(cpu::matmul_forward(c, out.t, out_bad.t, inp, w, b), vit::Error,
                        (Names{{"matmul_forward", "pre_gelu"}}));
  // The residual input: out's shape, not with the GELU epilogue, not out itself.
  BOOST_CHECK_EXCEPTION(cpu::matmul_forward(c, out.t, Tensor(), inp, w, b, out_bad), vit::Error,
                        (Names{{"matmul_forward", "residual"}}));
  BOOST_CHECK_EXCEPTION(cpu::matmul_forward(c, out.t, pre.t, inp, w, b, out), vit::Error,
                        (Names{{"matmul_forward", "residual", "pre_gelu"}}));
  BOOST_CHECK_EXCEPTION(cpu::matmul_forward(c, out.t, Tensor(), inp, w, b, out), vit::Error,
                        (Names{{"matmul_forward", "residual", "out"}}));
  BOOST_CHECK_EXCEPTION(cpu::matmul_forward(c, out.t, Tensor(), as_dtype(inp, DType::BF16), w, b), vit::Error,
                        (Names{{"matmul_forward", "inp", "bf16"}}));
  BOOST_CHECK_EXCEPTION(cpu::matmul_forward(c, out.t, Tensor(), inp, on_gpu(w), b), vit::Error,
                        (Names{{"matmul_forward", "weight", "cuda"}}));
  BOOST_CHECK_EXCEPTION(cpu::matmul_forward(c, out.t, Tensor(), inp, Tensor(), b), vit::Error,
                        (Names{{"matmul_forward", "weight", "undefined"}}));
  BOOST_CHECK_EXCEPTION(cpu::matmul_backward(c, dinp.t, dw_bad.t, db.t, out, inp, w), vit::Error,
                        (Names{{"matmul_backward", "dweight"}}));
  BOOST_CHECK_EXCEPTION(cpu::matmul_backward(c, dinp.t, dw.t, db.t, inp, inp, w), vit::Error,
                        (Names{{"matmul_backward", "dout"}}));
  BOOST_CHECK_EXCEPTION(cpu::matmul_backward(c, out.t, dw.t, db.t, out, inp, w), vit::Error,
                        (Names{{"matmul_backward", "dinp"}}));
  // An input-gradient-only call (no dweight) takes no dbias and needs a dinp.
  BOOST_CHECK_EXCEPTION(cpu::matmul_backward(c, dinp.t, Tensor(), db.t, out, Tensor(), w), vit::Error,
                        (Names{{"matmul_backward", "dbias comes with dweight"}}));
  BOOST_CHECK_EXCEPTION(cpu::matmul_backward(c, Tensor(), Tensor(), Tensor(), out, inp, w), vit::Error,
                        (Names{{"matmul_backward", "nothing to compute"}}));
  // The public dispatcher: asking a CPU-only build for the GPU is an error.
#ifndef VIT_WITH_CUDA
  vit::Context gpu;
  gpu.device = Device::CUDA;
  BOOST_CHECK_EXCEPTION(kn::matmul_forward(gpu, out.t, Tensor(), inp, w, b), vit::Error,
                        (Names{{"matmul_forward", "without CUDA"}}));
#endif
}

BOOST_AUTO_TEST_CASE(elementwise_and_layernorm_refuse_mismatches) {
  const auto& c = cpu_ctx();
  Arr x({3, 4}), y({3, 5}), w({4}), b({4}), mean({3}), rstd({3}), mean_bad({4});
  BOOST_CHECK_EXCEPTION(cpu::gelu_forward(c, y.t, x), vit::Error, (Names{{"gelu_forward", "out"}}));
  BOOST_CHECK_EXCEPTION(cpu::gelu_backward(c, x.t, x, y), vit::Error, (Names{{"gelu_backward", "dout"}}));
  BOOST_CHECK_EXCEPTION(cpu::gelu_backward_recompute(c, x.t, x.t, x, x), vit::Error,
                        (Names{{"gelu_backward_recompute", "must not alias"}}));
  BOOST_CHECK_EXCEPTION(cpu::gelu_backward_recompute(c, x.t, y.t, x, x), vit::Error,
                        (Names{{"gelu_backward_recompute", "out"}}));
  BOOST_CHECK_EXCEPTION(cpu::residual_add(c, x.t, x, y), vit::Error, (Names{{"residual_add", "b"}}));
  Arr sum({3, 4}), ln({3, 4});
  BOOST_CHECK_EXCEPTION(cpu::residual_layernorm_forward(c, x.t, ln.t, mean.t, rstd.t, x, sum, w, b, 1e-5f), vit::Error,
                        (Names{{"residual_layernorm_forward", "must not alias"}}));
  BOOST_CHECK_EXCEPTION(cpu::residual_layernorm_forward(c, sum.t, ln.t, mean.t, rstd.t, x, y, w, b, 1e-5f),
                        vit::Error, (Names{{"residual_add", "b"}}));
  BOOST_CHECK_EXCEPTION(cpu::accumulate(c, x.t, as_dtype(x, DType::F16)), vit::Error,
                        (Names{{"accumulate", "src", "fp16"}}));
  BOOST_CHECK_EXCEPTION(cpu::layernorm_forward(c, x.t, mean.t, rstd.t, x, y, b, 1e-5f), vit::Error,
                        (Names{{"layernorm_forward", "weight"}}));
  BOOST_CHECK_EXCEPTION(cpu::layernorm_forward(c, x.t, mean_bad.t, rstd.t, x, w, b, 1e-5f), vit::Error,
                        (Names{{"layernorm_forward", "mean"}}));
  BOOST_CHECK_EXCEPTION(cpu::layernorm_backward(c, y.t, w.t, b.t, x, x, w, mean, rstd), vit::Error,
                        (Names{{"layernorm_backward", "dinp"}}));
  BOOST_CHECK_EXCEPTION(cpu::layernorm_backward(c, x.t, w.t, Tensor(), x, x, w, mean, rstd), vit::Error,
                        (Names{{"layernorm_backward", "dbias", "undefined"}}));
}

BOOST_AUTO_TEST_CASE(attention_refuses_mismatches) {
  const auto& c = cpu_ctx();
  const auto impl = kn::AttentionImpl::CuDNN;
  Arr qkv({2, 5, 24}), out({2, 5, 8}), aux({2, 2, 5, 5}), small_aux({2, 2, 5, 4}), dqkv({2, 5, 24});
  BOOST_CHECK_NO_THROW(cpu::attention_forward(c, out.t, aux.t, qkv, 2, impl));
  BOOST_CHECK_EXCEPTION(cpu::attention_forward(c, out.t, aux.t, qkv, 3, impl), vit::Error,
                        (Names{{"attention_forward", "NH"}}));  // C = 8 is not a multiple of 3
  BOOST_CHECK_EXCEPTION(cpu::attention_forward(c, out.t, small_aux.t, qkv, 2, impl), vit::Error,
                        (Names{{"attention_forward", "aux"}}));
  BOOST_CHECK_EXCEPTION(cpu::attention_forward(c, out.t, aux.t, out, 2, impl), vit::Error,
                        (Names{{"attention_forward", "qkv"}}));
  BOOST_CHECK_EXCEPTION(cpu::attention_backward(c, out.t, out, qkv, out, aux, 2, impl), vit::Error,
                        (Names{{"attention_backward", "dqkv"}}));
  BOOST_CHECK_EXCEPTION(cpu::attention_backward(c, dqkv.t, qkv, qkv, out, aux, 2, impl), vit::Error,
                        (Names{{"attention_backward", "dout"}}));
  // The CPU needs B*NH*T*T fp32 probabilities, which is what attention_aux_bytes says.
  BOOST_TEST(kn::attention_aux_bytes(Device::CPU, impl, DType::F32, 2, 5, 2) == aux.t.bytes());
}

BOOST_AUTO_TEST_CASE(embedding_and_cross_entropy_refuse_mismatches) {
  const auto& c = cpu_ctx();
  std::vector<uint8_t> img(2 * 4 * 6 * 3, 7);
  const Tensor images(img.data(), DType::F32, Device::CPU, {2, 4, 6, 3});
  const Tensor images_rgba(img.data(), DType::F32, Device::CPU, {2, 4, 4, 4});
  Arr patches({2, 6, 12}), patches_bad({2, 6, 11});
  BOOST_CHECK_NO_THROW(cpu::patchify(c, patches.t, images, 2));
  BOOST_CHECK_EXCEPTION(cpu::patchify(c, patches.t, images, 4), vit::Error,
                        (Names{{"patchify", "multiple of the patch size"}}));
  BOOST_CHECK_EXCEPTION(cpu::patchify(c, patches_bad.t, images, 2), vit::Error, (Names{{"patchify", "patches"}}));
  BOOST_CHECK_EXCEPTION(cpu::patchify(c, patches.t, images_rgba, 2), vit::Error, (Names{{"patchify", "images"}}));
  BOOST_CHECK_EXCEPTION(cpu::patchify(c, patches.t, on_gpu(images), 2), vit::Error,
                        (Names{{"patchify", "images", "cuda"}}));

  Arr x({2, 5, 8}), pe({2, 4, 8}), cls({8}), pos({5, 8}), pos_bad({4, 8}), cls_bad({1, 2, 4}), head({2, 8});
  BOOST_CHECK_EXCEPTION(cpu::embed_tokens_forward(c, x.t, pe, cls, pos_bad), vit::Error,
                        (Names{{"embed_tokens_forward", "pos"}}));
  BOOST_CHECK_EXCEPTION(cpu::embed_tokens_forward(c, x.t, pe, cls_bad, pos), vit::Error,
                        (Names{{"embed_tokens_forward", "cls"}}));
  BOOST_CHECK_EXCEPTION(cpu::embed_tokens_backward(c, x.t, cls.t, pos.t, x), vit::Error,
                        (Names{{"embed_tokens_backward", "dpatch_emb"}}));
  BOOST_CHECK_EXCEPTION(cpu::select_cls_forward(c, pe.t, x), vit::Error, (Names{{"select_cls_forward", "out"}}));
  BOOST_CHECK_EXCEPTION(cpu::select_cls_backward(c, x.t, pe), vit::Error, (Names{{"select_cls_backward", "dout"}}));

  Arr logits({3, 4}), losses({3}), dlogits({3, 5});
  std::vector<int32_t> labels = {0, 3, 1}, bad_labels = {0, 4, 1}, pred(3);
  const Tensor lab(labels.data(), DType::F32, Device::CPU, {3});
  const Tensor bad(bad_labels.data(), DType::F32, Device::CPU, {3});
  const Tensor pr(pred.data(), DType::F32, Device::CPU, {3});
  BOOST_CHECK_NO_THROW(cpu::softmax_cross_entropy(c, losses.t, pr, Tensor(), logits, lab, 1.0f));
  BOOST_CHECK_EXCEPTION(cpu::softmax_cross_entropy(c, losses.t, pr, Tensor(), logits, bad, 1.0f), vit::Error,
                        (Names{{"softmax_cross_entropy", "label 4", "sample 1"}}));
  BOOST_CHECK_EXCEPTION(cpu::softmax_cross_entropy(c, losses.t, pr, dlogits.t, logits, lab, 1.0f), vit::Error,
                        (Names{{"softmax_cross_entropy", "dlogits"}}));
  BOOST_CHECK_EXCEPTION(cpu::softmax_cross_entropy(c, logits.t, pr, Tensor(), logits, lab, 1.0f), vit::Error,
                        (Names{{"softmax_cross_entropy", "losses"}}));
}

BOOST_AUTO_TEST_CASE(optimizer_kernels_refuse_mismatches) {
  const auto& c = cpu_ctx();
  Arr p({10}), m({10}), v({9}), g({10}), two({2});
  kn::AdamWHyper hp;
  BOOST_CHECK_EXCEPTION(cpu::adamw_update(c, p.t, m.t, v.t, g, Tensor(), hp, Tensor(), Tensor()), vit::Error,
                        (Names{{"adamw_update", "v"}}));
  BOOST_CHECK_EXCEPTION(cpu::adamw_update(c, p.t, m.t, p.t, g, Tensor(), hp, two, Tensor()), vit::Error,
                        (Names{{"adamw_update", "grad_scale"}}));
  hp.step = 0;
  BOOST_CHECK_EXCEPTION(cpu::adamw_update(c, p.t, m.t, p.t, g, Tensor(), hp, Tensor(), Tensor()), vit::Error,
                        (Names{{"adamw_update", "step"}}));
  BOOST_CHECK_EXCEPTION(cpu::sum_squares(c, two.t, g), vit::Error, (Names{{"sum_squares", "out"}}));
  BOOST_CHECK_EXCEPTION(cpu::nonfinite_flag(c, g.t, g), vit::Error, (Names{{"nonfinite_flag", "flag"}}));
  BOOST_CHECK_EXCEPTION(cpu::grad_scale_from_norm(c, p.t, m.t, g, 1.0f, 1.0f), vit::Error,
                        (Names{{"grad_scale_from_norm", "scale"}}));
  BOOST_CHECK_EXCEPTION(cpu::cast(c, v.t, g), vit::Error, (Names{{"cast", "src"}}));
  BOOST_CHECK_EXCEPTION(cpu::cast(c, on_gpu(g), g), vit::Error, (Names{{"cast", "dst", "cuda"}}));
  BOOST_CHECK_EXCEPTION(cpu::fill(c, Tensor(), 1.0f), vit::Error, (Names{{"fill", "undefined"}}));
}

BOOST_AUTO_TEST_SUITE_END()
