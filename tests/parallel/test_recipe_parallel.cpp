// The training recipe through every data-parallel plugin (torch_ddp,
// low_level_zero stage 1 and 2, and gemini with optimizer offload 0, 0.5
// and 1) on 1, 2 and 4 CPU ranks:
//   - the weight average (StepFinisher) of weights that do not move is those
//     weights, bit for bit; of moving weights it follows the recurrence
//     computed on the host from the weights gathered after every step;
//     swap_ema() puts the average in and the trained weights back exactly;
//   - layer-wise lr decay and no decay on biases/norms/embeddings: every
//     parameter's update equals AdamW computed on the host from the gathered
//     gradients with that parameter's own lr and decay (views split at
//     parameter boundaries, also where ZeRO's buckets, gemini's chunk parts
//     and padding cut them; gemini's offloaded parts in the CPU AdamW, one
//     run of equal multipliers at a time);
//   - mixup targets and drop-path/dropout masks keyed by the global sample
//     position: the data-parallel run's losses and gradients equal one rank's
//     on the whole global batch.
#define BOOST_TEST_MODULE recipe_parallel
#include <boost/test/unit_test.hpp>

#include "common/mpi_main.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "comm/bootstrap.h"
#include "comm/process_mesh.h"
#include "core/rng.h"
#include "kernels/cpu_threads.h"
#include "model/params.h"
#include "parallel/param_groups.h"
#include "parallel/plugin.h"

#include "grouped_adamw_check.h"

using namespace vit;

namespace {

constexpr int kGlobalBatch = 8;
constexpr float kLr = 2e-3f;
constexpr float kWeightDecay = 0.1f;

model::ViTConfig tiny_vit() {
  model::ViTConfig c;
  c.image_size = 16;
  c.patch_size = 4;
  c.hidden = 32;
  c.depth = 3;
  c.heads = 2;
  c.mlp_dim = 48;
  c.num_classes = 3;
  return c;
}

struct Plug {
  std::string name;
  int stage = 2;                           // low_level_zero
  float offload_optim = 0.0f, offload_param = 0.0f;  // gemini
  parallel::GeminiOptions::CpuUpdate cpu_update = parallel::GeminiOptions::CpuUpdate::Auto;
  std::string label() const {
    if (name == "low_level_zero") return name + " stage " + std::to_string(stage);
    if (name == "gemini") {
      return name + " offload " + std::to_string(offload_optim) + " param offload " + std::to_string(offload_param);
    }
    return name;
  }
};
const std::vector<Plug> kDataParallel = {{"torch_ddp"}, {"low_level_zero", 1}, {"low_level_zero", 2}};
// gemini with its optimizer states on the device, half and all of them on
// the host (CPU AdamW on the worker thread; on demand, so every gather meets
// a pending update, and overlapped), the last with half the parameters too.
const std::vector<Plug> kGemini = {
    {"gemini"},
    {"gemini", 2, 0.5f, 0.0f, parallel::GeminiOptions::CpuUpdate::OnDemand},
    {"gemini", 2, 1.0f, 0.5f, parallel::GeminiOptions::CpuUpdate::Overlap}};
std::vector<Plug> all_plugins() {
  std::vector<Plug> all = kDataParallel;
  all.insert(all.end(), kGemini.begin(), kGemini.end());
  return all;
}

struct Setup {
  Plug plug;
  MPI_Comm comm = MPI_COMM_WORLD;
  int steps = 3;
  float lr = kLr;
  float ema_decay = 0.0f;
  parallel::ParamGroupOptions groups;
  model::Regularization reg;
  bool mixed = false;  // mixup targets in every micro-batch
  std::vector<float> load;          // weights to start from instead of the init (and to evaluate)
  int eval_rank = -1, eval_ranks = 1;  // steps 0: evaluate the slice of rank eval_rank of eval_ranks
  bool swap_at_once = false;  // ema: swap_ema() right after the last train_step (gemini: CPU updates pending)
};

struct Outcome {
  std::vector<float> init;
  std::vector<double> losses, norms;
  std::vector<std::vector<float>> grads, params;  // after each step
  std::vector<float> ema, after_swap_back;
  double ema_eval_loss = 0;  // this rank's eval_batch on its first-step images, average swapped in
};

Outcome train(const Setup& s) {
  kernels::set_cpu_threads(1);
  const model::ViTConfig cfg = tiny_vit();
  const size_t per_image = static_cast<size_t>(cfg.image_size) * cfg.image_size * cfg.channels;
  const size_t n = static_cast<size_t>(std::max(s.steps, 1)) * kGlobalBatch;
  std::vector<uint8_t> images(n * per_image);
  std::vector<int32_t> labels(n), labels_b(n);
  std::vector<float> lambda(n);
  Rng rng(2024), label_rng(2025);  // two streams: the first images and labels do not depend on n
  for (auto& p : images) p = static_cast<uint8_t>(rng.below(256));
  for (size_t i = 0; i < n; ++i) {
    labels[i] = static_cast<int32_t>(label_rng.below(3));
    labels_b[i] = static_cast<int32_t>(label_rng.below(3));
    lambda[i] = static_cast<float>(label_rng.uniform());
  }
  comm::WorldInfo info = comm::query_world(s.comm);
  comm::ProcessMesh mesh(s.comm, info, 1, 1, false);
  parallel::PluginOptions opts;
  opts.name = s.plug.name;
  opts.zero.stage = s.plug.stage;
  opts.gemini.chunk_bytes = 8 << 10;  // one chunk per segment (5): several to offload, gather and update apart
  opts.gemini.offload_optim_frac = s.plug.offload_optim;
  opts.gemini.offload_param_frac = s.plug.offload_param;
  opts.gemini.cpu_update = s.plug.cpu_update;
  opts.bucket_bytes = 8 << 10;  // several buckets, each cut at parameter boundaries and padded
  opts.weight_decay = kWeightDecay;
  opts.ema_decay = s.ema_decay;
  opts.groups = s.groups;
  model::ComputeConfig cc;
  cc.reg = s.reg;
  parallel::PluginEnv env{Context{}, &mesh};
  const int dp = mesh.dp_size(), per_rank = kGlobalBatch / dp;
  auto plugin = parallel::make_plugin(opts, cfg, cc, per_rank, env);
  Outcome out;
  out.init.resize(static_cast<size_t>(model::ParamLayout(cfg).total()));
  model::init_params(model::ParamLayout(cfg), 0.05f, 42, out.init.data());
  plugin->load_params(s.load.empty() ? out.init : s.load);
  if (s.eval_rank >= 0) {  // evaluation only: the images another plugin's rank eval_rank evaluated
    const int slice = kGlobalBatch / s.eval_ranks;
    parallel::MicroBatch mb;
    mb.images = images.data() + static_cast<size_t>(s.eval_rank * slice) * per_image;
    mb.labels = labels.data() + s.eval_rank * slice;
    mb.count = slice;
    out.ema_eval_loss = plugin->eval_batch(mb).loss_sum;
    return out;
  }
  for (int step = 0; step < s.steps; ++step) {
    const int first = step * kGlobalBatch + mesh.dp_rank() * per_rank;
    parallel::MicroBatch mb;
    mb.images = images.data() + static_cast<size_t>(first) * per_image;
    mb.labels = labels.data() + first;
    mb.count = per_rank;
    if (s.mixed) {
      mb.labels_b = labels_b.data() + first;
      mb.mix_lambda = lambda.data() + first;
    }
    mb.noise_key = mix_seed(7, static_cast<uint64_t>(step));
    mb.first_sample = mesh.dp_rank() * per_rank;
    const parallel::StepResult r = plugin->train_step({mb}, kGlobalBatch, s.lr, 1.0f, step + 1);
    out.losses.push_back(r.loss);
    out.norms.push_back(r.grad_norm);
    if (s.swap_at_once && step + 1 == s.steps) break;
    out.grads.push_back(plugin->gather_grads());
    out.params.push_back(plugin->gather_params());
  }
  if (s.ema_decay > 0) {
    plugin->swap_ema();
    out.ema = plugin->gather_params();
    parallel::MicroBatch mb;  // what the model now runs with: evaluation sees the average
    mb.images = images.data() + static_cast<size_t>(mesh.dp_rank() * per_rank) * per_image;
    mb.labels = labels.data() + mesh.dp_rank() * per_rank;
    mb.count = per_rank;
    out.ema_eval_loss = plugin->eval_batch(mb).loss_sum;
    plugin->swap_ema();
    out.after_swap_back = plugin->gather_params();
  }
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace

BOOST_AUTO_TEST_CASE(weight_average_of_still_weights_is_those_weights) {
  for (const Plug& p : all_plugins()) {
    BOOST_TEST_CONTEXT(p.label() << " on " << vit_mpi_size() << " ranks") {
      Setup s;
      s.plug = p;
      s.lr = 0.0f;  // AdamW with lr 0 leaves every weight where it is, exactly
      s.ema_decay = 0.9f;
      const Outcome o = train(s);
      BOOST_TEST(o.params.back() == o.init);
      BOOST_TEST(o.ema == o.init);  // bit for bit
    }
  }
}

BOOST_AUTO_TEST_CASE(weight_average_follows_the_host_recurrence) {
  for (const Plug& p : all_plugins()) {
    BOOST_TEST_CONTEXT(p.label() << " on " << vit_mpi_size() << " ranks") {
      Setup s;
      s.plug = p;
      s.steps = 4;
      s.ema_decay = 0.8f;
      const Outcome o = train(s);
      // ema_0 = the loaded weights, ema_t = d ema_{t-1} + (1 - d) p_t, in double.
      std::vector<double> ref(o.init.begin(), o.init.end());
      for (const auto& pt : o.params) {
        for (size_t i = 0; i < ref.size(); ++i) ref[i] = 0.8 * ref[i] + 0.2 * pt[i];
      }
      double moved = 0;
      for (size_t i = 0; i < ref.size(); ++i) moved = std::max(moved, std::abs(o.params.back()[i] - ref[i]));
      // The weights move by ~lr = 2e-3 per step; the average stays behind by
      // about that much (moved). fp32 rounding of 4 updates of O(0.1)
      // values: ~1e-8; 1e-6 is 100x that and a thousandth of `moved`, so a
      // wrong decay, a missed or doubled step, or a stale shard fails.
      BOOST_TEST(moved > 1e-3);
      BOOST_TEST(max_abs_diff(o.ema, ref) <= 1e-6, "largest difference " << max_abs_diff(o.ema, ref));
      BOOST_TEST(o.after_swap_back == o.params.back());  // the trained weights come back exactly
      // swap_ema() straight after a step, with gemini's CPU AdamW of the
      // offloaded parts (and their average) still pending: it waits for
      // them, the same average and weights bit for bit.
      Setup at_once = s;
      at_once.swap_at_once = true;
      const Outcome q = train(at_once);
      BOOST_TEST(q.ema == o.ema);
      BOOST_TEST(q.after_swap_back == o.params.back());
      // Evaluation with the average swapped in runs the average on every
      // rank (ZeRO: every rank's parts gathered): the same loss as a plugin
      // that was given the average as its weights, bit for bit (fp32).
      Setup given;
      given.plug = kDataParallel[0];
      given.comm = MPI_COMM_SELF;
      given.steps = 0;
      given.load = o.ema;
      given.eval_rank = vit_mpi_rank();
      given.eval_ranks = vit_mpi_size();
      const Outcome r = train(given);
      BOOST_TEST(o.ema_eval_loss == r.ema_eval_loss);
    }
  }
}

BOOST_AUTO_TEST_CASE(each_parameter_updates_with_its_own_lr_and_decay) {
  const model::ViTConfig cfg = tiny_vit();
  const model::ParamLayout layout(cfg);
  parallel::ParamGroupOptions groups;
  groups.layer_decay = 0.5f;  // embeddings at 0.5^4 = 1/16 of the head's lr
  groups.no_decay_bias_norm = true;
  const std::vector<parallel::ParamMultipliers> mult = parallel::param_multipliers(layout, groups);
  // The rule itself: the head at the full lr, block l at 0.5^(L - l), the
  // embeddings at 0.5^(L + 1); decay off on 1-D parameters and pos_embed.
  for (size_t j = 0; j < mult.size(); ++j) {
    const model::ParamInfo& pi = layout.params()[j];
    const int id = parallel::layer_id(pi, cfg.depth);
    BOOST_TEST(mult[j].lr == std::pow(0.5f, static_cast<float>(cfg.depth + 1 - id)), pi.name);
    const bool decays = pi.global_shape.size() >= 2 && pi.name != "pos_embed";
    BOOST_TEST(mult[j].wd == (decays ? 1.0f : 0.0f), pi.name);
  }
  BOOST_TEST(parallel::layer_id(layout[layout.head_w], cfg.depth) == cfg.depth + 1);
  BOOST_TEST(parallel::layer_id(layout[layout.blocks[1].fc1_w], cfg.depth) == 2);
  BOOST_TEST(parallel::layer_id(layout[layout.pos_embed], cfg.depth) == 0);
  BOOST_TEST(mult[layout.patch_w].wd == 1.0f);
  BOOST_TEST(mult[layout.cls_token].wd == 0.0f);

  for (const Plug& p : all_plugins()) {
    BOOST_TEST_CONTEXT(p.label() << " on " << vit_mpi_size() << " ranks") {
      Setup s;
      s.plug = p;
      s.steps = 2;
      s.groups = groups;
      const Outcome o = train(s);
      grouped_adamw::check(layout, mult, kLr, kWeightDecay, o.init, o.grads, o.params, s.steps);
    }
  }
}

BOOST_AUTO_TEST_CASE(split_views_cut_at_parameter_boundaries) {
  std::vector<float> a(20), b(20), c(20), d(20);
  parallel::ShardView v;
  v.master = Tensor(a.data(), DType::F32, Device::CPU, {20});
  v.m = Tensor(b.data(), DType::F32, Device::CPU, {20});
  v.v = Tensor(c.data(), DType::F32, Device::CPU, {20});
  v.grad = Tensor(d.data(), DType::F32, Device::CPU, {20});
  // The view covers [100, 120); parameters [90, 105) x0.5, [105, 108) x0.5
  // (merged with the previous), [110, 130) x1 decay 0; [108, 110) is padding.
  const auto out = parallel::split_views({v}, {100}, {{90, 105}, {105, 108}, {110, 130}},
                                         {{0.5f, 1.0f}, {0.5f, 1.0f}, {1.0f, 0.0f}});
  BOOST_TEST_REQUIRE(out.size() == 3u);
  BOOST_TEST(out[0].master.data == static_cast<void*>(a.data()));
  BOOST_TEST(out[0].master.numel() == 8);
  BOOST_TEST(out[0].lr_mult == 0.5f);
  BOOST_TEST(out[1].master.data == static_cast<void*>(a.data() + 8));
  BOOST_TEST(out[1].grad.data == static_cast<void*>(d.data() + 8));
  BOOST_TEST(out[1].master.numel() == 2);
  BOOST_TEST((out[1].lr_mult == 1.0f && out[1].wd_mult == 1.0f));
  BOOST_TEST(out[2].m.data == static_cast<void*>(b.data() + 10));
  BOOST_TEST(out[2].master.numel() == 10);
  BOOST_TEST(out[2].wd_mult == 0.0f);
  BOOST_TEST(!out[2].lowp.defined());
}

BOOST_AUTO_TEST_CASE(mixed_targets_and_masks_do_not_depend_on_the_rank_count) {
  // The reference: torch_ddp on one rank with the whole global batch.
  Setup s;
  s.plug = kDataParallel[0];
  s.comm = MPI_COMM_SELF;
  s.mixed = true;
  s.reg.drop_path = 0.4f;
  s.reg.hidden_dropout = 0.1f;
  s.reg.label_smoothing = 0.1f;
  const Outcome alone = train(s);
  Setup plain = s;
  plain.mixed = false;
  plain.reg = model::Regularization{};
  const Outcome unregularised = train(plain);
  for (const Plug& p : all_plugins()) {
    s.plug = p;
    s.comm = MPI_COMM_WORLD;
    const Outcome parallel = train(s);
    for (size_t t = 0; t < parallel.losses.size(); ++t) {
      BOOST_TEST_CONTEXT(p.label() << ", step " << t + 1 << " on " << vit_mpi_size() << " ranks") {
        // As test_data_parallel: only the order of fp32 sums differs (the
        // reductions; gemini's chunked reduce-scatter), 1e-5 relative; the
        // losses are O(1), so 1e-5 absolute as well.
        BOOST_TEST(parallel.losses[t] == alone.losses[t], boost::test_tools::tolerance(1e-5));
        BOOST_TEST(std::abs(parallel.losses[t] - alone.losses[t]) <= 1e-5);
        BOOST_TEST(parallel.norms[t] == alone.norms[t], boost::test_tools::tolerance(1e-5));
        // Gradients element by element: the largest difference against the
        // largest gradient (max-abs), and the summed difference against the
        // summed size (a mask or target gone wrong on a few samples moves
        // many elements by a fraction of their size).
        double d = 0, gmax = 0, dsum = 0, gsum = 0;
        for (size_t i = 0; i < alone.grads[t].size(); ++i) {
          const double e = std::abs(double(parallel.grads[t][i]) - alone.grads[t][i]);
          d = std::max(d, e);
          dsum += e;
          gmax = std::max(gmax, std::abs(double(alone.grads[t][i])));
          gsum += std::abs(double(alone.grads[t][i]));
        }
        BOOST_TEST(d <= 1e-5 * gmax, "gradient difference " << d << " of max " << gmax);
        BOOST_TEST(dsum <= 1e-5 * gsum, "summed gradient difference " << dsum << " of " << gsum);
        // ... and the recipe did act on the loss.
        BOOST_TEST(std::abs(alone.losses[t] - unregularised.losses[t]) > 1e-3);
      }
    }
  }
}
