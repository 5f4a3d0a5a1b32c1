// The whole ViT on the CPU: its gradient against central finite differences,
// recompute against stored activations, and shape checks.
#define BOOST_TEST_MODULE model
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/attention.h"
#include "kernels/cpu_threads.h"
#include "model/params.h"
#include "model/vit.h"

using namespace vit;

namespace {

model::ViTConfig tiny_vit() {
  model::ViTConfig c;
  c.image_size = 12;
  c.patch_size = 4;  // 9 patches, 10 tokens
  c.hidden = 16;
  c.depth = 2;
  c.heads = 2;
  c.mlp_dim = 24;
  c.num_classes = 3;
  c.layernorm_eps = 1e-6f;
  return c;
}

struct Fixture {
  model::ViTConfig cfg = tiny_vit();
  model::ParamLayout layout{cfg};
  int B = 3;
  std::vector<float> params, grads;
  std::vector<uint8_t> images;
  std::vector<int32_t> labels;

  Fixture() {
    kernels::set_cpu_threads(1);
    params.resize(static_cast<size_t>(layout.total()));
    grads.assign(params.size(), 0.0f);
    // Larger-than-default weights (std 0.2) so every path carries signal.
    model::init_params(layout, 0.2f, 11, params.data());
    Rng rng(5);
    for (size_t i = 0; i < params.size(); ++i) params[i] += static_cast<float>(0.05 * rng.normal());
    images.resize(static_cast<size_t>(B) * cfg.image_size * cfg.image_size * 3);
    for (auto& p : images) p = static_cast<uint8_t>(rng.below(256));
    labels = {0, 2, 1};
  }

  Tensor images_t() { return Tensor(images.data(), DType::U8, Device::CPU, {B, cfg.image_size, cfg.image_size, 3}); }
  Tensor labels_t() { return Tensor(labels.data(), DType::I32, Device::CPU, {B}); }

  // Mean loss over the batch, summed in double.
  double loss(model::ViTModel& m) {
    m.bind(Tensor(params.data(), DType::F32, Device::CPU, {layout.total()}), Tensor());
    m.forward(images_t(), labels_t(), B);
    const float* l = m.losses(B).as<float>();
    double s = 0;
    for (int i = 0; i < B; ++i) s += l[i];
    return s / B;
  }

  void gradient(model::ViTModel& m) {
    std::fill(grads.begin(), grads.end(), 0.0f);
    m.bind(Tensor(params.data(), DType::F32, Device::CPU, {layout.total()}),
           Tensor(grads.data(), DType::F32, Device::CPU, {layout.total()}));
    m.forward_backward(images_t(), labels_t(), B, 1.0f / B);
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(whole_model_gradient_matches_finite_differences) {
  Fixture f;
  model::ViTModel m(f.cfg, model::ComputeConfig{}, Context{}, f.B);
  f.gradient(m);
  // For each parameter tensor, the directional derivative along a random
  // direction restricted to it: (L(p + h d) - L(p - h d)) / 2h against g . d.
  // fp32 forward passes with h = 1e-2 on O(0.2) weights: truncation error
  // O(h^2) ~ 1e-4 relative, rounding ~1e-7 / 1e-2 = 1e-5 absolute. Pass if
  // |fd - g.d| <= 2e-3 |g.d| + 2e-5.
  Rng rng(99);
  const double h = 1e-2;
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
    const double plus = f.loss(m);
    for (int64_t i = 0; i < p.numel; ++i) f.params[p.offset + i] = saved[i] - static_cast<float>(h * dir[i]);
    const double minus = f.loss(m);
    std::copy(saved.begin(), saved.end(), f.params.begin() + p.offset);
    const double numeric = (plus - minus) / (2 * h);
    BOOST_TEST(std::abs(numeric - analytic) <= 2e-3 * std::abs(analytic) + 2e-5,
               p.name << ": finite difference " << numeric << " vs backward " << analytic);
  }
}

// Recompute in backward (whole blocks, train.recompute; the GELU outputs,
// train.recompute_gelu; the LayerNorm outputs, train.recompute_norm; and
// together) gives the stored run's losses and gradients bit for bit: the same
// arithmetic in the same order. Whole blocks keep less; the GELU recompute
// keeps exactly one (B, T, mlp_dim) buffer per block less and has one shared
// buffer for the GELU output made again (the stored run's MLP backward writes
// its gradients over its activations, so it has none); the LayerNorm
// recompute two (B, T, hidden) buffers per block less and one shared.
BOOST_AUTO_TEST_CASE(recompute_gives_the_same_gradients) {
  Fixture f;
  model::ViTModel stored(f.cfg, model::ComputeConfig{}, Context{}, f.B);
  f.gradient(stored);
  const std::vector<float> g1 = f.grads;
  const std::vector<float> loss1(stored.losses(f.B).as<float>(), stored.losses(f.B).as<float>() + f.B);
  const size_t gelu_bytes = static_cast<size_t>(f.B) * f.cfg.tokens() * f.cfg.mlp_dim * sizeof(float);
  const size_t norm_bytes = static_cast<size_t>(f.B) * f.cfg.tokens() * f.cfg.hidden * sizeof(float);
  struct Mode {
    bool block, gelu, norm;
  };
  for (const Mode& m : {Mode{true, false, false}, Mode{false, true, false}, Mode{true, true, false},
                        Mode{false, false, true}, Mode{false, true, true}, Mode{true, true, true}}) {
    BOOST_TEST_CONTEXT("recompute " << m.block << ", recompute_gelu " << m.gelu << ", recompute_norm " << m.norm) {
      model::ComputeConfig rc;
      rc.recompute = m.block;
      rc.recompute_gelu = m.gelu;
      rc.recompute_norm = m.norm;
      model::ViTModel recomputed(f.cfg, rc, Context{}, f.B);
      BOOST_TEST(recomputed.activation_bytes() < stored.activation_bytes());
      if (!m.block) {
        const size_t saved = (m.gelu ? (f.cfg.depth - 1) * gelu_bytes : 0) +
                             (m.norm ? (2 * f.cfg.depth - 1) * norm_bytes : 0);
        BOOST_TEST(stored.activation_bytes() - recomputed.activation_bytes() == saved);
      }
      f.gradient(recomputed);
      BOOST_TEST(f.grads == g1);
      const std::vector<float> loss(recomputed.losses(f.B).as<float>(), recomputed.losses(f.B).as<float>() + f.B);
      BOOST_TEST(loss == loss1);
    }
  }
}

// The model's activation memory is exactly the buffers listed here, so a
// buffer added or kept longer than needed shows. The patch projection and
// its gradient have no buffer of their own (they live in the backward's
// scratch, dtmp, within the embedding's forward and backward calls).
BOOST_AUTO_TEST_CASE(activation_bytes_are_the_listed_buffers) {
  Fixture f;
  const model::ComputeConfig cc;
  model::ViTModel m(f.cfg, cc, Context{}, f.B);
  const size_t s = sizeof(float), B = static_cast<size_t>(f.B), T = static_cast<size_t>(f.cfg.tokens()),
               C = static_cast<size_t>(f.cfg.hidden), F = static_cast<size_t>(f.cfg.mlp_dim),
               L = static_cast<size_t>(f.cfg.depth), NP = static_cast<size_t>(f.cfg.num_patches()),
               P = static_cast<size_t>(f.cfg.patch_dim()), K = static_cast<size_t>(f.cfg.num_classes);
  const size_t aux =
      (kernels::attention_aux_bytes(Device::CPU, cc.attention, DType::F32, f.B, f.cfg.tokens(), f.cfg.heads) + 3) /
      4 * 4;
  const size_t per_block = 7 * B * T * C * s      // ln1, qkv (3), att, xmid, ln2
                           + 2 * B * T * F * s    // fc1 before and after GELU
                           + 4 * B * T * 4 + aux;  // the LayerNorm statistics, the attention's aux
  const size_t expected = (L + 1) * B * T * C * s     // the residual stream
                          + L * per_block             //
                          + B * NP * P * s            // the patches (the patch weight gradient's input)
                          + 2 * B * C * s + 2 * B * 4 // the head's CLS rows, LayerNorm output, statistics
                          + 2 * B * K * s + B * 4     // logits, their gradient, losses
                          + 2 * B * T * C * s         // dres, dtmp
                          + 3 * B * T * C * s         // dqkv (the CPU's attention backward is not in place)
                          + 2 * B * C * s             // dcls, dcls_ln
                          + (L > 1 ? 2 * C * s : 0);  // fc2's bias gradients, summed a block early
  BOOST_TEST(m.activation_bytes() == expected);
}

// set_assign_grads: a backward over a gradient buffer full of garbage gives
// the gradients of one that adds to zeros; afterwards backward adds again.
BOOST_AUTO_TEST_CASE(assigned_gradients_need_no_zeroed_buffer) {
  Fixture f;
  model::ViTModel m(f.cfg, model::ComputeConfig{}, Context{}, f.B);
  f.gradient(m);
  const std::vector<float> g1 = f.grads;
  Rng rng(17);
  for (float& g : f.grads) g = static_cast<float>(1e3 * rng.normal());
  m.set_assign_grads(true);
  m.forward_backward(f.images_t(), f.labels_t(), f.B, 1.0f / f.B);
  BOOST_TEST(f.grads == g1);
  m.set_assign_grads(false);
  m.forward_backward(f.images_t(), f.labels_t(), f.B, 1.0f / f.B);
  for (size_t i = 0; i < g1.size(); ++i) {
    BOOST_TEST_REQUIRE(std::abs(f.grads[i] - 2 * g1[i]) <= 1e-6f * std::abs(g1[i]) + 1e-9f);
  }
}

BOOST_AUTO_TEST_CASE(gradients_accumulate_across_calls) {
  Fixture f;
  model::ViTModel m(f.cfg, model::ComputeConfig{}, Context{}, f.B);
  f.gradient(m);
  const std::vector<float> once = f.grads;
  m.forward_backward(f.images_t(), f.labels_t(), f.B, 1.0f / f.B);  // adds to the bound buffer
  for (size_t i = 0; i < once.size(); ++i) {
    BOOST_TEST_REQUIRE(std::abs(f.grads[i] - 2 * once[i]) <= 1e-6f * std::abs(once[i]) + 1e-9f);
  }
}

namespace {
// A source that records what the model tells it, around flat buffers.
struct RecordingSource : model::ParamSource {
  model::FlatParamSource flat;
  std::vector<std::string> events;
  RecordingSource(const model::ParamLayout& l, const Tensor& p, const Tensor& g) : flat(l, p, g) {}
  Tensor param(int i) override { return flat.param(i); }
  Tensor grad(int i) override { return flat.grad(i); }
  void before_forward(const model::Segment& s) override { events.push_back("F+ " + s.name()); }
  void after_forward(const model::Segment& s) override { events.push_back("F- " + s.name()); }
  void before_backward(const model::Segment& s) override { events.push_back("B+ " + s.name()); }
  void after_backward(const model::Segment& s) override { events.push_back("B- " + s.name()); }
};
}  // namespace

BOOST_AUTO_TEST_CASE(param_source_hears_every_segment_in_order) {
  Fixture f;
  for (bool recompute : {false, true}) {
    model::ComputeConfig cc;
    cc.recompute = recompute;
    model::ViTModel m(f.cfg, cc, Context{}, f.B);
    RecordingSource src(m.layout(), Tensor(f.params.data(), DType::F32, Device::CPU, {f.layout.total()}),
                        Tensor(f.grads.data(), DType::F32, Device::CPU, {f.layout.total()}));
    m.set_param_source(&src);
    m.forward_backward(f.images_t(), f.labels_t(), f.B, 1.0f);
    // Forward in buffer order, backward in reverse; a recomputed block is
    // rebuilt inside its backward without telling the source again.
    const std::vector<std::string> want = {"F+ embeddings", "F- embeddings", "F+ block 0", "F- block 0",
                                           "F+ block 1",    "F- block 1",    "F+ head",    "F- head",
                                           "B+ head",       "B- head",       "B+ block 1", "B- block 1",
                                           "B+ block 0",    "B- block 0",    "B+ embeddings", "B- embeddings"};
    BOOST_TEST(src.events == want, boost::test_tools::per_element());
  }
  // The segments tile the buffer in order.
  const auto segs = f.layout.segments();
  BOOST_TEST_REQUIRE(segs.size() == static_cast<size_t>(f.cfg.depth + 2));
  int64_t at = 0;
  for (const auto& s : segs) {
    BOOST_TEST(f.layout.range(s).first == at);
    at = f.layout.range(s).second;
  }
  BOOST_TEST(at == f.layout.total());
}

BOOST_AUTO_TEST_CASE(activation_slots_are_independent) {
  // Two micro-batches in flight (what a pipeline schedule does): forward of
  // slot 0, forward of slot 1 on other images, then backward of slot 0 gives
  // the gradient of slot 0's images alone.
  Fixture f;
  model::ViTModel one(f.cfg, model::ComputeConfig{}, Context{}, f.B);
  f.gradient(one);
  const std::vector<float> want = f.grads;
  model::ViTModel two(f.cfg, model::ComputeConfig{}, Context{}, f.B, model::ShardSpec(), 2);
  std::fill(f.grads.begin(), f.grads.end(), 0.0f);
  two.bind(Tensor(f.params.data(), DType::F32, Device::CPU, {f.layout.total()}),
           Tensor(f.grads.data(), DType::F32, Device::CPU, {f.layout.total()}));
  std::vector<uint8_t> other(f.images.size());
  for (size_t i = 0; i < other.size(); ++i) other[i] = static_cast<uint8_t>(255 - f.images[i]);
  std::vector<int32_t> other_labels = {1, 1, 0};
  Tensor other_t(other.data(), DType::U8, Device::CPU, {f.B, f.cfg.image_size, f.cfg.image_size, 3});
  Tensor other_l(other_labels.data(), DType::I32, Device::CPU, {f.B});
  two.embed_forward(f.images_t(), f.B, 0);
  for (int l = 0; l < f.cfg.depth; ++l) two.block_forward(l, f.B, 0);
  two.head_forward(f.labels_t(), f.B, 1.0f / f.B, true, 0);
  two.forward(other_t, other_l, f.B, 1);  // overwrites nothing of slot 0
  two.head_backward(f.B, 0);
  for (int l = f.cfg.depth - 1; l >= 0; --l) two.block_backward(l, f.B, 0);
  two.embed_backward(f.B, 0);
  BOOST_TEST(f.grads == want);  // same arithmetic: bitwise
}

BOOST_AUTO_TEST_CASE(wrong_inputs_are_refused) {
  Fixture f;
  model::ViTModel m(f.cfg, model::ComputeConfig{}, Context{}, f.B);
  std::vector<float> short_params(10);
  BOOST_CHECK_THROW(m.bind(Tensor(short_params.data(), DType::F32, Device::CPU, {10}), Tensor()), Error);
  m.bind(Tensor(f.params.data(), DType::F32, Device::CPU, {f.layout.total()}), Tensor());
  BOOST_CHECK_THROW(m.forward(f.images_t(), f.labels_t(), f.B + 1), Error);  // over max_batch
  model::ComputeConfig bf16;
  bf16.dtype = DType::BF16;
  BOOST_CHECK_THROW(model::ViTModel(f.cfg, bf16, Context{}, 2), Error);  // the CPU is fp32 only
}
