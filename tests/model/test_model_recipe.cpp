// The model's training-time regularisation and soft targets on the CPU:
// identity in evaluation; the gradient with drop path, dropout, mixed labels
// and label smoothing against central finite differences of the same
// training loss (the same fixed masks: the same noise key); deterministic
// masks (recompute, repeated calls); the soft target as the mix of two hard
// losses.
#define BOOST_TEST_MODULE model_recipe
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/cpu_threads.h"
#include "kernels/dropout.h"
#include "model/params.h"
#include "model/vit.h"

using namespace vit;

namespace {

model::ViTConfig tiny_vit() {
  model::ViTConfig c;
  c.image_size = 12;
  c.patch_size = 4;  // 9 patches, 10 tokens
  c.hidden = 16;
  c.depth = 3;
  c.heads = 2;
  c.mlp_dim = 24;
  c.num_classes = 3;
  c.layernorm_eps = 1e-6f;
  return c;
}

model::ComputeConfig with_reg(float drop_path, float dropout, float smoothing) {
  model::ComputeConfig cc;
  cc.reg.drop_path = drop_path;
  cc.reg.hidden_dropout = dropout;
  cc.reg.label_smoothing = smoothing;
  return cc;
}

struct Fixture {
  model::ViTConfig cfg = tiny_vit();
  model::ParamLayout layout{cfg};
  int B = 4;
  std::vector<float> params, grads;
  std::vector<uint8_t> images;
  std::vector<int32_t> labels = {0, 2, 1, 2}, labels_b = {1, 2, 0, 0};
  std::vector<float> lambda = {0.3f, 1.0f, 0.75f, 0.0f};

  Fixture() {
    kernels::set_cpu_threads(1);
    params.resize(static_cast<size_t>(layout.total()));
    grads.assign(params.size(), 0.0f);
    model::init_params(layout, 0.2f, 11, params.data());
    Rng rng(5);
    for (size_t i = 0; i < params.size(); ++i) params[i] += static_cast<float>(0.05 * rng.normal());
    images.resize(static_cast<size_t>(B) * cfg.image_size * cfg.image_size * 3);
    for (auto& p : images) p = static_cast<uint8_t>(rng.below(256));
  }
  Tensor images_t() { return Tensor(images.data(), DType::U8, Device::CPU, {B, cfg.image_size, cfg.image_size, 3}); }
  Tensor labels_t(std::vector<int32_t>& l) { return Tensor(l.data(), DType::I32, Device::CPU, {B}); }
  Tensor params_t() { return Tensor(params.data(), DType::F32, Device::CPU, {layout.total()}); }
  Tensor grads_t() { return Tensor(grads.data(), DType::F32, Device::CPU, {layout.total()}); }
  model::TrainExtras extras(uint64_t key, bool mixed) {
    model::TrainExtras x;
    if (mixed) {
      x.labels_b = Tensor(labels_b.data(), DType::I32, Device::CPU, {B});
      x.lambda = Tensor(lambda.data(), DType::F32, Device::CPU, {B});
    }
    x.noise_key = key;
    x.first_sample = 5;
    return x;
  }
  // Mean training loss (masks and soft targets of `x`), forward only, through
  // the stage functions in training mode.
  double train_loss(model::ViTModel& m, const model::TrainExtras& x) {
    m.bind(params_t(), Tensor());
    m.set_train_extras(x);
    m.set_training(true);
    m.embed_forward(images_t(), B);
    for (int l = 0; l < cfg.depth; ++l) m.block_forward(l, B);
    m.head_forward(labels_t(labels), B, 1.0f, false);
    m.set_training(false);
    double s = 0;
    for (int i = 0; i < B; ++i) s += m.losses(B).as<float>()[i];
    return s / B;
  }
  void gradient(model::ViTModel& m, const model::TrainExtras& x) {
    std::fill(grads.begin(), grads.end(), 0.0f);
    m.bind(params_t(), grads_t());
    m.set_train_extras(x);
    m.forward_backward(images_t(), labels_t(labels), B, 1.0f / B);
  }
};

// The drop-path decision of (block l, branch) for sample b under `key`, as
// ViTModel keys its sites (mix_seed(key, l + 1, branch), kernels/dropout.h).
bool drop_path_keeps(uint64_t key, int l, int branch, int64_t sample, float rate) {
  return kernels::noise_uniform(mix_seed(key, static_cast<uint64_t>(l + 1), static_cast<uint64_t>(branch)),
                                static_cast<uint64_t>(sample), 0) < 1.0f - rate;
}

}  // namespace

BOOST_AUTO_TEST_CASE(evaluation_ignores_every_regulariser) {
  Fixture f;
  model::ViTModel plain(f.cfg, model::ComputeConfig{}, Context{}, f.B);
  model::ViTModel reg(f.cfg, with_reg(0.5f, 0.3f, 0.2f), Context{}, f.B);
  plain.bind(f.params_t(), Tensor());
  reg.bind(f.params_t(), Tensor());
  reg.set_train_extras(f.extras(77, true));  // ignored by forward()
  reg.set_training(true);                    // forward() evaluates whatever the stage mode
  plain.forward(f.images_t(), f.labels_t(f.labels), f.B);
  reg.forward(f.images_t(), f.labels_t(f.labels), f.B);
  BOOST_TEST(reg.training());  // restored after forward()
  const int64_t K = f.cfg.num_classes;
  const std::vector<float> l1(plain.logits(f.B).as<float>(), plain.logits(f.B).as<float>() + f.B * K);
  const std::vector<float> l2(reg.logits(f.B).as<float>(), reg.logits(f.B).as<float>() + f.B * K);
  BOOST_TEST(l1 == l2);  // bit for bit: no mask, no scaling
  for (int i = 0; i < f.B; ++i) BOOST_TEST(plain.losses(f.B).as<float>()[i] == reg.losses(f.B).as<float>()[i]);
}

BOOST_AUTO_TEST_CASE(drop_path_rate_grows_linearly_with_depth) {
  model::Regularization r;
  r.drop_path = 0.3f;
  BOOST_TEST(r.drop_path_rate(0, 4) == 0.0f);
  BOOST_TEST(r.drop_path_rate(1, 4) == 0.1f, boost::test_tools::tolerance(1e-6f));
  BOOST_TEST(r.drop_path_rate(3, 4) == 0.3f, boost::test_tools::tolerance(1e-6f));
  BOOST_TEST(r.drop_path_rate(0, 1) == 0.0f);
}

BOOST_AUTO_TEST_CASE(gradient_with_masks_and_soft_targets_matches_finite_differences) {
  Fixture f;
  // A key whose drop-path masks drop some samples and keep others in both
  // branches of the last two blocks (rates 0.25 and 0.5), so that the check
  // covers dropped, kept-and-scaled and mixed batches.
  const float rate = 0.5f;
  uint64_t key = 0;
  for (uint64_t k = 1; k < 1000 && key == 0; ++k) {
    bool mixed = true;
    for (int l = 1; l < f.cfg.depth; ++l) {
      for (int branch = 0; branch < 2; ++branch) {
        int kept = 0;
        for (int b = 0; b < f.B; ++b) kept += drop_path_keeps(k, l, branch, 5 + b, rate * l / (f.cfg.depth - 1));
        mixed = mixed && kept > 0 && kept < f.B;
      }
    }
    if (mixed) key = k;
  }
  BOOST_TEST_REQUIRE(key != 0);
  model::ViTModel m(f.cfg, with_reg(rate, 0.2f, 0.1f), Context{}, f.B);
  const model::TrainExtras x = f.extras(key, true);
  f.gradient(m, x);
  // The training loss really differs from evaluation (masks and targets act).
  m.bind(f.params_t(), Tensor());
  m.forward(f.images_t(), f.labels_t(f.labels), f.B);
  double eval_loss = 0;
  for (int i = 0; i < f.B; ++i) eval_loss += m.losses(f.B).as<float>()[i];
  BOOST_TEST(std::abs(eval_loss / f.B - f.train_loss(m, x)) > 1e-3);
  // Directional derivatives per parameter tensor, as test_model.cpp: fp32
  // forwards with h = 1e-2 on O(0.2) weights; truncation O(h^2) ~ 1e-4
  // relative, rounding ~1e-5 absolute: |fd - g.d| <= 2e-3 |g.d| + 2e-5.
  Rng rng(99);
  const double h = 1e-2;
  int checked = 0;
  for (const auto& p : f.layout.params()) {
    std::vector<float> dir(static_cast<size_t>(p.numel));
    double norm = 0;
    for (auto& d : dir) {
      d = static_cast<float>(rng.normal());
      norm += double(d) * d;
    }
    for (auto& d : dir) d = static_cast<float>(d / std::sqrt(norm));
    double analytic = 0;
    for (int64_t i = 0; i < p.numel; ++i) analytic += double(f.grads[p.offset + i]) * dir[i];
    const std::vector<float> saved(f.params.begin() + p.offset, f.params.begin() + p.offset + p.numel);
    for (int64_t i = 0; i < p.numel; ++i) f.params[p.offset + i] = saved[i] + static_cast<float>(h * dir[i]);
    const double plus = f.train_loss(m, x);
    for (int64_t i = 0; i < p.numel; ++i) f.params[p.offset + i] = saved[i] - static_cast<float>(h * dir[i]);
    const double minus = f.train_loss(m, x);
    std::copy(saved.begin(), saved.end(), f.params.begin() + p.offset);
    const double numeric = (plus - minus) / (2 * h);
    BOOST_TEST(std::abs(numeric - analytic) <= 2e-3 * std::abs(analytic) + 2e-5,
               p.name << ": finite difference " << numeric << " vs backward " << analytic);
    checked += std::abs(analytic) > 1e-4;
  }
  BOOST_TEST(checked > 10);  // most parameters carry signal through the masks
}

BOOST_AUTO_TEST_CASE(masks_are_a_function_of_the_key) {
  Fixture f;
  model::ViTModel m(f.cfg, with_reg(0.5f, 0.1f, 0.0f), Context{}, f.B);
  f.gradient(m, f.extras(5, false));
  const std::vector<float> g1 = f.grads;
  f.gradient(m, f.extras(5, false));
  BOOST_TEST(f.grads == g1);  // same key: the same masks, bit for bit
  f.gradient(m, f.extras(6, false));
  BOOST_TEST(f.grads != g1);  // another key: other masks
  // Recompute rebuilds the same masks in backward.
  model::ComputeConfig rc = with_reg(0.5f, 0.1f, 0.0f);
  rc.recompute = true;
  model::ViTModel recomputed(f.cfg, rc, Context{}, f.B);
  f.gradient(recomputed, f.extras(5, false));
  BOOST_TEST(f.grads == g1);
  // So does the GELU recompute, with the masks on the MLP branch's gradient.
  model::ComputeConfig gc = with_reg(0.5f, 0.1f, 0.0f);
  gc.recompute_gelu = true;
  model::ViTModel gelu_recomputed(f.cfg, gc, Context{}, f.B);
  f.gradient(gelu_recomputed, f.extras(5, false));
  BOOST_TEST(f.grads == g1);
  // forward_backward without a key draws its own (a new one each call).
  std::fill(f.grads.begin(), f.grads.end(), 0.0f);
  m.bind(f.params_t(), f.grads_t());
  m.forward_backward(f.images_t(), f.labels_t(f.labels), f.B, 1.0f / f.B);
  const std::vector<float> own1 = f.grads;
  std::fill(f.grads.begin(), f.grads.end(), 0.0f);
  m.forward_backward(f.images_t(), f.labels_t(f.labels), f.B, 1.0f / f.B);
  BOOST_TEST(f.grads != own1);
  // The stage functions refuse to train with masks but no key.
  model::ViTModel staged(f.cfg, with_reg(0.5f, 0.0f, 0.0f), Context{}, f.B);
  staged.bind(f.params_t(), Tensor());
  staged.set_training(true);
  staged.embed_forward(f.images_t(), f.B);
  BOOST_CHECK_THROW(staged.block_forward(f.cfg.depth - 1, f.B), Error);
}

BOOST_AUTO_TEST_CASE(mixed_target_loss_is_the_mix_of_the_two_hard_losses) {
  Fixture f;
  model::ViTModel m(f.cfg, model::ComputeConfig{}, Context{}, f.B);
  const double mixed_mean = f.train_loss(m, f.extras(0, true));
  std::vector<float> mixed(m.losses(f.B).as<float>(), m.losses(f.B).as<float>() + f.B);
  m.bind(f.params_t(), Tensor());
  m.forward(f.images_t(), f.labels_t(f.labels), f.B);
  std::vector<float> la(m.losses(f.B).as<float>(), m.losses(f.B).as<float>() + f.B);
  m.forward(f.images_t(), f.labels_t(f.labels_b), f.B);
  std::vector<float> lb(m.losses(f.B).as<float>(), m.losses(f.B).as<float>() + f.B);
  for (int b = 0; b < f.B; ++b) {
    const double want = f.lambda[b] * double(la[b]) + (1.0 - f.lambda[b]) * lb[b];
    BOOST_TEST(std::abs(mixed[b] - want) <= 1e-5 * std::abs(want) + 1e-6, "sample " << b);
  }
  (void)mixed_mean;
}
