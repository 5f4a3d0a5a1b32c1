// The whole ViT on the GPU against the whole ViT on the CPU (not op by op).
//
// For each model shape, compute dtype (fp32 with TF32 off, bf16, fp16),
// attention path (cuDNN, cuBLAS; the padded-heads form where the head size
// needs it) and recompute on/off: one forward + backward of a batch on the
// GPU model and on the CPU model (fp32), both given the same weights rounded
// to the compute dtype, the same images and labels. Compared: the logits,
// the per-sample losses, and the gradient of every parameter separately,
// each by a relative L2 bound and a largest-element bound from the one table
// (common/tolerances.h, model_tolerance). Every case prints its errors.
//
// Shapes: ViT-B/16 (T = 197, C = 768, 12 heads of 64, MLP 3072) and odd ones:
// head sizes 32, 12 and 5, token counts 37, 26 and 17 (not multiples of 8),
// MLP widths 200, 70 and 37, 5, 1 and 2 labels, batches of 2 and 3, and
// parameter views that start off 16-byte boundaries (checked below). Fixed
// seeds. Debug synchronisation is on (every op is synchronised and checked:
// core/cuda_check.h), so a fault is reported at the op that made it.
//
// Without a GPU (or without CUDA) the program exits 77 and ctest reports it
// as skipped (tests/common/gpu_main.h).
#define BOOST_TEST_MODULE model_gpu
#include <boost/test/unit_test.hpp>

#include "common/gpu_main.h"
#include "kernels_gpu/gpu_test_util.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#ifdef VIT_WITH_CUDA
#include "core/cuda_check.h"
#endif
#include "kernels/cast.h"
#include "kernels/cpu_threads.h"
#include "model/params.h"
#include "model/vit.h"

using namespace vit;
using namespace vit::test;
namespace K = vit::kernels;

namespace {

struct ModelCase {
  std::string name;
  model::ViTConfig cfg;
  int B;
};

model::ViTConfig make_cfg(int image, int patch, int hidden, int depth, int heads, int mlp, int classes) {
  model::ViTConfig c;
  c.image_size = image;
  c.patch_size = patch;
  c.hidden = hidden;
  c.depth = depth;
  c.heads = heads;
  c.mlp_dim = mlp;
  c.num_classes = classes;
  c.layernorm_eps = 1e-6f;
  return c;
}

const ModelCase kCases[] = {
    {"vit_b16", make_cfg(224, 16, 768, 12, 12, 3072, 3), 2},
    // The model of issue 8: image 48, patch 8, hidden 96, 3 heads of 32, MLP 200, 5 labels.
    {"hs32_t37_k5", make_cfg(48, 8, 96, 2, 3, 200, 5), 3},
    {"hs12_t26_k1", make_cfg(40, 8, 36, 2, 3, 70, 1), 3},
    {"hs5_t17_k2", make_cfg(24, 6, 20, 2, 4, 37, 2), 2},
};

struct Outputs {
  std::vector<float> logits, losses, grads;
};

struct Inputs {
  std::vector<float> params;  // fp32, then rounded to the compute dtype per run
  std::vector<uint8_t> images;
  std::vector<int32_t> labels;
};

Inputs make_inputs(const ModelCase& mc) {
  const model::ParamLayout layout(mc.cfg);
  Inputs in;
  in.params.resize(static_cast<size_t>(layout.total()));
  model::init_params(layout, 0.02f, 7, in.params.data());
  // Noise on everything (LayerNorm weights off 1, biases off 0) so that every
  // parameter and every path carries signal.
  Rng rng(mix_seed(99, static_cast<uint64_t>(mc.cfg.hidden)));
  for (auto& p : in.params) p += static_cast<float>(0.02 * rng.normal());
  const auto& c = mc.cfg;
  in.images.resize(static_cast<size_t>(mc.B) * c.image_size * c.image_size * c.channels);
  for (auto& p : in.images) p = static_cast<uint8_t>(rng.below(256));
  for (int b = 0; b < mc.B; ++b) in.labels.push_back(static_cast<int32_t>(rng.below(c.num_classes)));
  return in;
}

std::vector<float> rounded(const std::vector<float>& v, DType t) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = round_to(t, v[i]);
  return out;
}

Outputs run_cpu(const ModelCase& mc, const Inputs& in, DType weights_dtype) {
  kernels::set_cpu_threads(0);
  model::ViTModel m(mc.cfg, model::ComputeConfig{}, Context{}, mc.B);
  const int64_t N = m.layout().total();
  std::vector<float> params = rounded(in.params, weights_dtype);
  Outputs out;
  out.grads.assign(static_cast<size_t>(N), 0.0f);
  m.bind(Tensor(params.data(), DType::F32, Device::CPU, {N}), Tensor(out.grads.data(), DType::F32, Device::CPU, {N}));
  const auto& c = mc.cfg;
  std::vector<uint8_t> images = in.images;
  std::vector<int32_t> labels = in.labels;
  m.forward_backward(Tensor(images.data(), DType::U8, Device::CPU, {mc.B, c.image_size, c.image_size, c.channels}),
                     Tensor(labels.data(), DType::I32, Device::CPU, {mc.B}), mc.B, 1.0f / mc.B);
  const float* lg = m.logits(mc.B).as<float>();
  out.logits.assign(lg, lg + static_cast<size_t>(mc.B) * c.num_classes);
  const float* ls = m.losses(mc.B).as<float>();
  out.losses.assign(ls, ls + mc.B);
  return out;
}

// What backward recomputes: nothing, whole blocks (train.recompute), the
// GELU outputs (train.recompute_gelu), or the GELU and LayerNorm outputs
// (train.recompute_gelu and train.recompute_norm).
enum class Recompute { None, Block, Gelu, GeluNorm };

Outputs run_gpu(const ModelCase& mc, const Inputs& in, DType dt, K::AttentionImpl attention, Recompute recompute,
                std::string* path_note) {
  Context ctx = gpu().context();
  model::ComputeConfig compute;
  compute.dtype = dt;
  compute.attention = attention;
  compute.recompute = recompute == Recompute::Block;
  compute.recompute_gelu = recompute == Recompute::Gelu || recompute == Recompute::GeluNorm;
  compute.recompute_norm = recompute == Recompute::GeluNorm;
  model::ViTModel m(mc.cfg, compute, ctx, mc.B);
  *path_note = K::attention_impl_name(m.compute().attention);
  const int64_t N = m.layout().total();
  const auto& c = mc.cfg;
  Buffer master(static_cast<size_t>(N) * 4, Device::CUDA), params(static_cast<size_t>(N) * dtype_size(dt), Device::CUDA),
      grads(static_cast<size_t>(N) * 4, Device::CUDA);
  copy_bytes(master.data(), Device::CUDA, in.params.data(), Device::CPU, master.bytes());
  K::cast(ctx, tensor_of(params, dt, {N}), tensor_of(master, DType::F32, {N}));
  K::fill(ctx, tensor_of(grads, DType::F32, {N}), 0.0f);
  Buffer images(in.images.size(), Device::CUDA), labels(in.labels.size() * 4, Device::CUDA);
  copy_bytes(images.data(), Device::CUDA, in.images.data(), Device::CPU, images.bytes());
  copy_bytes(labels.data(), Device::CUDA, in.labels.data(), Device::CPU, labels.bytes());
  m.bind(tensor_of(params, dt, {N}), tensor_of(grads, DType::F32, {N}));
  m.forward_backward(Tensor(images.data(), DType::U8, Device::CUDA, {mc.B, c.image_size, c.image_size, c.channels}),
                     Tensor(labels.data(), DType::I32, Device::CUDA, {mc.B}), mc.B, 1.0f / mc.B);
  const int64_t BK = static_cast<int64_t>(mc.B) * c.num_classes;
  Buffer logits32(static_cast<size_t>(BK) * 4, Device::CUDA);
  K::cast(ctx, tensor_of(logits32, DType::F32, {BK}), m.logits(mc.B).reshape({BK}));
  gpu().synchronize();
  Outputs out;
  out.logits.resize(static_cast<size_t>(BK));
  out.losses.resize(static_cast<size_t>(mc.B));
  out.grads.resize(static_cast<size_t>(N));
  copy_bytes(out.logits.data(), Device::CPU, logits32.data(), Device::CUDA, logits32.bytes());
  copy_bytes(out.losses.data(), Device::CPU, m.losses(mc.B).data, Device::CUDA, out.losses.size() * 4);
  copy_bytes(out.grads.data(), Device::CPU, grads.data(), Device::CUDA, grads.bytes());
  return out;
}

// One line per case in the summary printed at the end.
struct CaseRow {
  std::string what;
  double logits_rel, logits_max, losses_rel, losses_max, grads_rel, grads_max;
  std::string worst_grad;
  bool pass;
};
std::vector<CaseRow>& rows() {
  static std::vector<CaseRow> r;
  return r;
}

struct Summary {
  Summary() {
#ifdef VIT_WITH_CUDA
    set_cuda_debug_sync(true);
#endif
  }
  ~Summary() {
    gpu_holder().reset();
    std::printf("\nwhole model, GPU vs CPU: relative L2 error / largest element error (relative to the largest value)\n");
    std::printf("%-44s %19s %19s %19s  %-28s %s\n", "case", "logits", "losses", "worst gradient", "(parameter)", "");
    for (const auto& r : rows()) {
      std::printf("%-44s %9.2e/%9.2e %9.2e/%9.2e %9.2e/%9.2e  %-28s %s\n", r.what.c_str(), r.logits_rel,
                  r.logits_max, r.losses_rel, r.losses_max, r.grads_rel, r.grads_max, r.worst_grad.c_str(),
                  r.pass ? "ok" : "FAIL");
    }
    std::fflush(stdout);
  }
};
BOOST_TEST_GLOBAL_FIXTURE(Summary);

// Relative L2 and largest-element errors without asserting (for the table).
std::pair<double, double> errors(const float* got, const float* ref, size_t n) {
  double num = 0, den = 0, max_d = 0, max_r = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = std::isfinite(got[i]) ? static_cast<double>(got[i]) - ref[i] : INFINITY;
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
    max_d = std::max(max_d, std::fabs(d));
    max_r = std::max(max_r, std::fabs(static_cast<double>(ref[i])));
  }
  return {den > 0 ? std::sqrt(num / den) : std::sqrt(num), max_r > 0 ? max_d / max_r : max_d};
}

void check_case(const ModelCase& mc) {
  const model::ParamLayout layout(mc.cfg);
  const Inputs in = make_inputs(mc);
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    const Outputs ref = run_cpu(mc, in, dt);
    std::vector<K::AttentionImpl> paths{K::AttentionImpl::CuDNN, K::AttentionImpl::Cublas};
    if (dt == DType::F32) paths = {K::AttentionImpl::Cublas};  // cuDNN has no fp32 path (it runs cuBLAS)
    std::vector<std::string> done;  // a request that resolves to a path already run is skipped
    for (K::AttentionImpl attention : paths) {
      const std::string resolved =
          K::attention_impl_name(K::resolve_attention(Device::CUDA, attention, dt, mc.cfg.hidden, mc.cfg.heads));
      if (std::find(done.begin(), done.end(), resolved) != done.end()) continue;
      done.push_back(resolved);
      Outputs stored;
      for (Recompute recompute : {Recompute::None, Recompute::Block, Recompute::Gelu, Recompute::GeluNorm}) {
        std::string path;
        const Outputs got = run_gpu(mc, in, dt, attention, recompute, &path);
        const std::string what = mc.name + " " + dtype_name(dt) + " " + path +
                                 (recompute == Recompute::Block      ? " recompute"
                                  : recompute == Recompute::Gelu     ? " recompute_gelu"
                                  : recompute == Recompute::GeluNorm ? " recompute_gelu+norm"
                                                                     : "");
        CaseRow row{what, 0, 0, 0, 0, 0, 0, "", true};
        if (recompute == Recompute::None) stored = got;
        if (recompute == Recompute::Gelu || recompute == Recompute::GeluNorm) {
          // The same GEMMs on the forward's GELU and LayerNorm bits: the
          // stored run's results exactly.
          const bool same = got.grads == stored.grads && got.logits == stored.logits && got.losses == stored.losses;
          BOOST_CHECK_MESSAGE(same, what << ": differs in bits from the run that stores the GELU output");
          row.pass &= same;
        }
        std::tie(row.logits_rel, row.logits_max) = errors(got.logits.data(), ref.logits.data(), ref.logits.size());
        std::tie(row.losses_rel, row.losses_max) = errors(got.losses.data(), ref.losses.data(), ref.losses.size());
        row.pass &= compare(what + " logits", got.logits, ref.logits, model_tolerance(ModelOutput::Logits, dt));
        row.pass &= compare(what + " losses", got.losses, ref.losses, model_tolerance(ModelOutput::Losses, dt));
        const Bound gtol = model_tolerance(ModelOutput::Grads, dt);
        double worst = -1;
        for (const auto& p : layout.params()) {
          const auto first = static_cast<size_t>(p.offset);
          const auto e = errors(got.grads.data() + first, ref.grads.data() + first, static_cast<size_t>(p.numel));
          const double score = std::max(e.first / gtol.rel, e.second / gtol.max_abs);
          if (score > worst) {
            worst = score;
            row.grads_rel = e.first;
            row.grads_max = e.second;
            row.worst_grad = p.name;
          }
          if (score > 1.0 || !std::isfinite(score)) {
            row.pass &= compare(what + " grad " + p.name,
                                std::vector<float>(got.grads.begin() + p.offset, got.grads.begin() + p.offset + p.numel),
                                std::vector<float>(ref.grads.begin() + p.offset, ref.grads.begin() + p.offset + p.numel),
                                gtol);
          }
        }
        BOOST_CHECK_MESSAGE(row.pass, what << ": see the failed comparisons above");
        rows().push_back(row);
      }
    }
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(odd_shapes_have_views_off_16_byte_boundaries) {
  // The premise of the odd cases: some parameter views of the 16-bit copies
  // start off a 16-byte boundary, so the GEMMs and kernels see unaligned
  // operands.
  for (const auto& mc : kCases) {
    if (mc.name == "vit_b16" || mc.name == "hs32_t37_k5") continue;  // widths that are multiples of 8
    const model::ParamLayout layout(mc.cfg);
    int unaligned = 0;
    for (const auto& p : layout.params()) unaligned += (p.offset * 2) % 16 != 0;
    BOOST_TEST(unaligned > 0, mc.name << ": every view is 16-byte aligned");
  }
}

BOOST_AUTO_TEST_CASE(vit_b16) { check_case(kCases[0]); }
BOOST_AUTO_TEST_CASE(head_size_32_tokens_37_labels_5) { check_case(kCases[1]); }
BOOST_AUTO_TEST_CASE(head_size_12_tokens_26_labels_1) { check_case(kCases[2]); }
BOOST_AUTO_TEST_CASE(head_size_5_tokens_17_labels_2) { check_case(kCases[3]); }

// ---------------------------------------------------------------------------
// The training recipe on the GPU against the CPU: drop path, dropout, label
// smoothing and mixup targets in one forward + backward. The masks are the
// same on both devices (kernels/dropout.h), so the comparison is the one of
// check_case with the same tolerances; a mask that differed would zero a
// whole sample's branch on one side only and miss by O(1).
// ---------------------------------------------------------------------------
namespace {

Outputs run_recipe(const ModelCase& mc, const Inputs& in, DType dt, Device dev) {
  const auto& c = mc.cfg;
  model::ComputeConfig compute;
  compute.dtype = dt;
  compute.attention = K::AttentionImpl::Cublas;
  compute.reg.drop_path = 0.5f;
  compute.reg.hidden_dropout = 0.1f;
  compute.reg.label_smoothing = 0.1f;
  Context ctx = dev == Device::CUDA ? gpu().context() : Context{};
  if (dev == Device::CPU) kernels::set_cpu_threads(0);
  model::ViTModel m(c, compute, ctx, mc.B);
  const int64_t N = m.layout().total();
  const std::vector<float> host_params = rounded(in.params, dt);
  std::vector<int32_t> labels_b(static_cast<size_t>(mc.B));
  std::vector<float> lambda(static_cast<size_t>(mc.B));
  for (int b = 0; b < mc.B; ++b) {
    labels_b[b] = (in.labels[b] + 1) % c.num_classes;
    lambda[b] = 0.3f + 0.2f * b;
  }
  Buffer master(static_cast<size_t>(N) * 4, dev), params(static_cast<size_t>(N) * dtype_size(dt), dev),
      grads(static_cast<size_t>(N) * 4, dev), images(in.images.size(), dev), labels(in.labels.size() * 4, dev),
      lb(labels_b.size() * 4, dev), lam(lambda.size() * 4, dev);
  copy_bytes(master.data(), dev, host_params.data(), Device::CPU, master.bytes());
  K::cast(ctx, tensor_of(params, dt, {N}), tensor_of(master, DType::F32, {N}));
  K::fill(ctx, tensor_of(grads, DType::F32, {N}), 0.0f);
  copy_bytes(images.data(), dev, in.images.data(), Device::CPU, images.bytes());
  copy_bytes(labels.data(), dev, in.labels.data(), Device::CPU, labels.bytes());
  copy_bytes(lb.data(), dev, labels_b.data(), Device::CPU, lb.bytes());
  copy_bytes(lam.data(), dev, lambda.data(), Device::CPU, lam.bytes());
  m.bind(tensor_of(params, dt, {N}), tensor_of(grads, DType::F32, {N}));
  model::TrainExtras x;
  x.labels_b = Tensor(lb.data(), DType::I32, dev, {mc.B});
  x.lambda = Tensor(lam.data(), DType::F32, dev, {mc.B});
  x.noise_key = 0x5eed;
  x.first_sample = 2;
  m.set_train_extras(x);
  m.forward_backward(Tensor(images.data(), DType::U8, dev, {mc.B, c.image_size, c.image_size, c.channels}),
                     Tensor(labels.data(), DType::I32, dev, {mc.B}), mc.B, 1.0f / mc.B);
  const int64_t BK = static_cast<int64_t>(mc.B) * c.num_classes;
  Buffer logits32(static_cast<size_t>(BK) * 4, dev);
  K::cast(ctx, tensor_of(logits32, DType::F32, {BK}), m.logits(mc.B).reshape({BK}));
  if (dev == Device::CUDA) gpu().synchronize();
  Outputs out;
  out.logits.resize(static_cast<size_t>(BK));
  out.losses.resize(static_cast<size_t>(mc.B));
  out.grads.resize(static_cast<size_t>(N));
  copy_bytes(out.logits.data(), Device::CPU, logits32.data(), dev, logits32.bytes());
  copy_bytes(out.losses.data(), Device::CPU, m.losses(mc.B).data, dev, out.losses.size() * 4);
  copy_bytes(out.grads.data(), Device::CPU, grads.data(), dev, grads.bytes());
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(recipe_drop_path_dropout_soft_targets) {
  for (const ModelCase& mc : {kCases[1], kCases[0]}) {
    const Inputs in = make_inputs(mc);
    for (DType dt : {DType::F32, DType::BF16}) {
      // The CPU (fp32) runs on the weights rounded to the compute dtype.
      const Outputs ref_dt = run_recipe(mc, Inputs{rounded(in.params, dt), in.images, in.labels}, DType::F32, Device::CPU);
      const Outputs got = run_recipe(mc, in, dt, Device::CUDA);
      const std::string what = mc.name + " " + dtype_name(dt) + " recipe";
      compare(what + " logits", got.logits, ref_dt.logits, model_tolerance(ModelOutput::Logits, dt));
      compare(what + " losses", got.losses, ref_dt.losses, model_tolerance(ModelOutput::Losses, dt));
      compare(what + " grads", got.grads, ref_dt.grads, model_tolerance(ModelOutput::Grads, dt));
    }
  }
}
