// The training recipe through hybrid_parallel (run with 2 and 4 CPU ranks by
// ctest: tp2, pp2 (2 pipeline micro-batches), dp2 + ZeRO-1; tp2 x pp2,
// pp2 x dp2 + ZeRO-1, tp2 x dp2 + ZeRO-1):
//   - mixup targets, label smoothing, drop path and dropout masks keyed by
//     the global sample position: every layout's losses, grad_norms,
//     gathered gradients and weights equal one torch_ddp rank's on the
//     whole global batch (every tp rank draws the same masks, each stage
//     masks its blocks with their index in the whole model, the last stage
//     gets the soft targets of each pipeline micro-batch); without noise
//     keys (benchmark mode) the plugin draws one rank's keys;
//   - layer-wise lr decay and no decay on biases/norms/embeddings over tp
//     slices, stage-local parameters and ZeRO-1 shards: every parameter's
//     update equals AdamW computed on the host from the gathered gradients
//     with its full-model parameter's lr and decay;
//   - the weight average (StepFinisher): of weights that do not move it is
//     those weights, bit for bit; of moving weights it follows the
//     recurrence computed on the host from the weights gathered after every
//     step; swap_ema() puts the average in (evaluation runs it on every
//     stage and tp rank) and the trained weights back exactly.
// test_recipe_parallel.cpp checks the same for the data-parallel plugins.
#define BOOST_TEST_MODULE recipe_hybrid
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

// Four blocks: a pipeline of two stages holds two each, so drop path's
// rate differs between every block and a per-stage block index shows.
model::ViTConfig tiny_vit() {
  model::ViTConfig c;
  c.image_size = 16;
  c.patch_size = 4;
  c.hidden = 32;
  c.depth = 4;
  c.heads = 2;
  c.mlp_dim = 48;
  c.num_classes = 3;
  return c;
}

struct Layout {
  int tp = 1, pp = 1, micro = 1, zero = 0;
  std::string name() const {
    return "tp" + std::to_string(tp) + " pp" + std::to_string(pp) + " mb" + std::to_string(micro) +
           (zero ? " zero1" : "");
  }
};

std::vector<Layout> layouts_for_world(int world) {
  if (world == 2) return {Layout{2, 1, 1, 0}, Layout{1, 2, 2, 0}, Layout{1, 1, 1, 1}};
  if (world == 4) return {Layout{2, 2, 2, 0}, Layout{1, 2, 2, 1}, Layout{2, 1, 1, 1}};
  return {};
}

struct Setup {
  std::string plugin = "hybrid_parallel";  // or torch_ddp alone on MPI_COMM_SELF: the reference
  Layout layout;
  int steps = 3;
  float lr = kLr;
  float ema_decay = 0.0f;
  std::vector<float> load;  // weights to start from instead of the init (steps 0: evaluation only)
  parallel::ParamGroupOptions groups;
  model::Regularization reg;
  bool mixed = false;  // mixup targets in every micro-batch
  bool keyed = true;   // false: micro-batches without a noise key (benchmark mode): the plugin draws one
};

struct Outcome {
  std::vector<float> init;
  std::vector<double> losses, norms;
  std::vector<std::vector<float>> grads, params;  // gathered, after each step
  std::vector<float> ema, after_swap_back;        // the average swapped in; the weights swapped back
  parallel::EvalResult eval;  // all-reduced over the first global batch: with the average swapped in, or `load`
};

Outcome train(const Setup& s) {
  kernels::set_cpu_threads(1);
  const model::ViTConfig cfg = tiny_vit();
  const size_t per_image = static_cast<size_t>(cfg.image_size) * cfg.image_size * cfg.channels;
  const size_t n = static_cast<size_t>(std::max(s.steps, 1)) * kGlobalBatch;
  std::vector<uint8_t> images(n * per_image);
  std::vector<int32_t> labels(n), labels_b(n);
  std::vector<float> lambda(n);
  Rng rng(2024), label_rng(2025);
  for (auto& p : images) p = static_cast<uint8_t>(rng.below(256));
  for (size_t i = 0; i < n; ++i) {
    labels[i] = static_cast<int32_t>(label_rng.below(3));
    labels_b[i] = static_cast<int32_t>(label_rng.below(3));
    lambda[i] = static_cast<float>(label_rng.uniform());
  }
  const bool hybrid = s.plugin == "hybrid_parallel";
  MPI_Comm comm = hybrid ? MPI_COMM_WORLD : MPI_COMM_SELF;
  comm::WorldInfo info = comm::query_world(comm);
  comm::ProcessMesh mesh(comm, info, hybrid ? s.layout.tp : 1, hybrid ? s.layout.pp : 1, false);
  parallel::PluginOptions opts;
  opts.name = s.plugin;
  opts.bucket_bytes = 8 << 10;  // several buckets, ZeRO-1 parts cut inside parameters
  opts.weight_decay = kWeightDecay;
  opts.ema_decay = s.ema_decay;
  opts.groups = s.groups;
  opts.hybrid.tp_size = mesh.tp_size();
  opts.hybrid.pp_size = mesh.pp_size();
  opts.hybrid.num_microbatches = hybrid ? s.layout.micro : 1;
  opts.hybrid.zero_stage = hybrid ? s.layout.zero : 0;
  model::ComputeConfig cc;
  cc.reg = s.reg;
  parallel::PluginEnv env{Context{}, &mesh};
  const int dp = mesh.dp_size(), per_rank = kGlobalBatch / dp;
  auto plugin = parallel::make_plugin(opts, cfg, cc, per_rank, env);
  Outcome out;
  const model::ParamLayout layout(cfg);
  out.init.resize(static_cast<size_t>(layout.total()));
  model::init_params(layout, 0.05f, 42, out.init.data());
  plugin->load_params(s.load.empty() ? out.init : s.load);
  // This rank's share of the first global batch, evaluated and summed over the data-parallel ranks.
  auto evaluate = [&] {
    parallel::MicroBatch mb;
    mb.images = images.data() + static_cast<size_t>(mesh.dp_rank() * per_rank) * per_image;
    mb.labels = labels.data() + mesh.dp_rank() * per_rank;
    mb.count = per_rank;
    return plugin->all_reduce_eval(plugin->eval_batch(mb));
  };
  if (s.steps == 0) out.eval = evaluate();
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
    // As the trainer: one key per step, the same on every rank; positions global.
    if (s.keyed) {
      mb.noise_key = mix_seed(7, static_cast<uint64_t>(step));
      mb.first_sample = mesh.dp_rank() * per_rank;
    }
    const parallel::StepResult r = plugin->train_step({mb}, kGlobalBatch, s.lr, 1.0f, step + 1);
    out.losses.push_back(r.loss);
    out.norms.push_back(r.grad_norm);
    out.grads.push_back(plugin->gather_grads());
    out.params.push_back(plugin->gather_params());
  }
  if (s.ema_decay > 0) {
    plugin->swap_ema();
    out.ema = plugin->gather_params();
    out.eval = evaluate();  // what the model now runs with: evaluation sees the average
    plugin->swap_ema();
    out.after_swap_back = plugin->gather_params();
  }
  return out;
}

double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float x : a) m = std::max(m, std::abs(double(x)));
  return m;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

// Step t of a hybrid layout against one torch_ddp rank: loss and grad_norm
// within 1e-5 relative, the gathered gradient within 1e-5 of its largest
// element (the bounds are explained where they are first used). Returns the
// gradient's largest difference.
double check_step_against_one_rank(const Outcome& got, const Outcome& alone, size_t t) {
  BOOST_TEST(got.losses[t] == alone.losses[t], boost::test_tools::tolerance(1e-5));
  BOOST_TEST(got.norms[t] == alone.norms[t], boost::test_tools::tolerance(1e-5));
  BOOST_TEST_REQUIRE(got.grads[t].size() == alone.grads[t].size());
  const double d = max_abs_diff(got.grads[t], alone.grads[t]), gmax = max_abs(alone.grads[t]);
  BOOST_TEST(d <= 1e-5 * gmax, "gradient difference " << d << " of max " << gmax);
  return d;
}

}  // namespace

BOOST_AUTO_TEST_CASE(mixed_targets_and_masks_match_one_torch_ddp_rank) {
  Setup s;
  s.mixed = true;
  s.reg.drop_path = 0.4f;
  s.reg.hidden_dropout = 0.1f;
  s.reg.label_smoothing = 0.1f;
  Setup ref_setup = s;
  ref_setup.plugin = "torch_ddp";
  const Outcome alone = train(ref_setup);
  Setup plain = ref_setup;
  plain.mixed = false;
  plain.reg = model::Regularization{};
  const Outcome unregularised = train(plain);
  for (size_t t = 0; t < alone.losses.size(); ++t) {
    // The recipe acts on the loss (else the parity below proves nothing).
    BOOST_TEST(std::abs(alone.losses[t] - unregularised.losses[t]) > 1e-3, "step " << t + 1);
  }
  for (const Layout& lay : layouts_for_world(vit_mpi_size())) {
    s.layout = lay;
    const Outcome got = train(s);
    for (size_t t = 0; t < alone.losses.size(); ++t) {
      BOOST_TEST_CONTEXT(lay.name() << ", step " << t + 1 << " on " << vit_mpi_size() << " ranks") {
        // Bounds of test_hybrid_parallel.cpp: the layouts add the same fp32
        // numbers in another order (~1e-7 relative per value): losses and
        // grad_norm 1e-5 relative; gradients 1e-5 of the largest element
        // (10x its first-step bound: steps 2 and 3 start from weights that
        // differ by AdamW's rounding, amplified by lr/eps where a gradient
        // is near eps). A mask drawn for another block, position or key
        // changes which samples' branches survive: O(1) of the gradient.
        const double d = check_step_against_one_rank(got, alone, t), gmax = max_abs(alone.grads[t]);
        // Weights: where a gradient is rounding noise (below 1e-6: the
        // largest gradient is O(1), fp32 rounds at ~1e-7 of it) AdamW moves
        // the weight by up to lr in the direction of the noise's sign (lr/eps
        // amplification): left out. Elsewhere the updates agree to 4e-5, the
        // bound of test_hybrid_parallel.cpp (measured here: below 1e-6).
        double w = 0;
        size_t noisy = 0;
        for (size_t i = 0; i < got.params[t].size(); ++i) {
          bool noise = false;
          for (size_t u = 0; u <= t; ++u) noise = noise || std::abs(alone.grads[u][i]) < 1e-6;
          if (noise) {
            ++noisy;
            continue;
          }
          w = std::max(w, std::abs(double(got.params[t][i]) - alone.params[t][i]));
        }
        BOOST_TEST(w < 4e-5, "weights differ by " << w << " (" << noisy << " with noise gradients left out)");
        BOOST_TEST_MESSAGE(lay.name() << " step " << t + 1 << ": loss rel " << std::abs(got.losses[t] / alone.losses[t] - 1)
                                      << ", grad_norm rel " << std::abs(got.norms[t] / alone.norms[t] - 1)
                                      << ", gradient max abs " << d << " of " << gmax << ", weights " << w << " ("
                                      << noisy << " left out)");
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(micro_batches_without_a_noise_key_draw_one_rank_s_masks) {
  // Benchmark mode trains without noise keys: the data-parallel plugins'
  // model draws one per micro-batch from a counter seeded by reg.seed, and
  // hybrid_parallel draws the same on every rank. With one data-parallel
  // replica (positions from 0 on, as one rank's) it is one rank's run.
  Setup s;
  s.keyed = false;
  s.reg.drop_path = 0.4f;
  s.reg.hidden_dropout = 0.1f;
  Setup ref_setup = s;
  ref_setup.plugin = "torch_ddp";
  const Outcome alone = train(ref_setup);
  for (const Layout& lay : layouts_for_world(vit_mpi_size())) {
    if (lay.tp * lay.pp != vit_mpi_size()) continue;  // data parallel: every replica's positions start at 0
    s.layout = lay;
    const Outcome got = train(s);
    for (size_t t = 0; t < alone.losses.size(); ++t) {
      BOOST_TEST_CONTEXT(lay.name() << ", step " << t + 1 << " on " << vit_mpi_size() << " ranks") {
        check_step_against_one_rank(got, alone, t);  // the bounds of mixed_targets_and_masks_match_one_torch_ddp_rank
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(each_parameter_updates_with_its_full_model_lr_and_decay) {
  const model::ViTConfig cfg = tiny_vit();
  const model::ParamLayout layout(cfg);
  parallel::ParamGroupOptions groups;
  groups.layer_decay = 0.5f;  // embeddings at 0.5^5 = 1/32 of the head's lr; every block its own
  groups.no_decay_bias_norm = true;
  const std::vector<parallel::ParamMultipliers> mult = parallel::param_multipliers(layout, groups);
  for (const Layout& lay : layouts_for_world(vit_mpi_size())) {
    BOOST_TEST_CONTEXT(lay.name() << " on " << vit_mpi_size() << " ranks") {
      Setup s;
      s.layout = lay;
      s.steps = 2;
      s.groups = groups;
      const Outcome o = train(s);
      grouped_adamw::check(layout, mult, kLr, kWeightDecay, o.init, o.grads, o.params, s.steps);
    }
  }
}

BOOST_AUTO_TEST_CASE(weight_average_of_still_weights_is_those_weights) {
  for (const Layout& lay : layouts_for_world(vit_mpi_size())) {
    BOOST_TEST_CONTEXT(lay.name() << " on " << vit_mpi_size() << " ranks") {
      Setup s;
      s.layout = lay;
      s.lr = 0.0f;  // AdamW with lr 0 leaves every weight where it is, exactly
      s.ema_decay = 0.9f;
      const Outcome o = train(s);
      BOOST_TEST(o.params.back() == o.init);
      BOOST_TEST(o.ema == o.init);  // bit for bit
    }
  }
}

BOOST_AUTO_TEST_CASE(weight_average_follows_the_host_recurrence) {
  for (const Layout& lay : layouts_for_world(vit_mpi_size())) {
    BOOST_TEST_CONTEXT(lay.name() << " on " << vit_mpi_size() << " ranks") {
      Setup s;
      s.layout = lay;
      s.steps = 4;
      s.ema_decay = 0.8f;
      const Outcome o = train(s);
      // ema_0 = the loaded weights, ema_t = d ema_{t-1} + (1 - d) p_t, in double.
      std::vector<double> ref(o.init.begin(), o.init.end());
      for (const auto& pt : o.params) {
        for (size_t i = 0; i < ref.size(); ++i) ref[i] = 0.8 * ref[i] + 0.2 * pt[i];
      }
      double moved = 0, diff = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        moved = std::max(moved, std::abs(o.params.back()[i] - ref[i]));
        diff = std::max(diff, std::abs(o.ema[i] - ref[i]));
      }
      // As test_recipe_parallel: the weights move by ~lr = 2e-3 per step and
      // the average stays behind by about that much (moved); fp32 rounding
      // of 4 updates of O(0.1) values is ~1e-8, so 1e-6 is 100x that and a
      // thousandth of `moved`: a wrong decay, a missed or doubled step, a
      // stale ZeRO-1 part or a stage left out fails.
      BOOST_TEST(moved > 1e-3);
      BOOST_TEST(diff <= 1e-6, "largest difference " << diff);
      BOOST_TEST(o.after_swap_back == o.params.back());  // the trained weights come back exactly
      // Evaluation with the average swapped in runs the average on every
      // stage and tp rank: the loss of one torch_ddp rank given the average
      // as its weights, on the same images. The layouts sum in another order
      // (row-parallel GEMMs, the eval sums): 1e-5 relative, as
      // test_hybrid_parallel's evaluation.
      Setup given;
      given.plugin = "torch_ddp";
      given.steps = 0;
      given.load = o.ema;
      const Outcome r = train(given);
      BOOST_TEST(o.eval.count == kGlobalBatch);
      BOOST_TEST(o.eval.count == r.eval.count);
      BOOST_TEST(o.eval.correct == r.eval.correct);
      BOOST_TEST(o.eval.loss_sum == r.eval.loss_sum, boost::test_tools::tolerance(1e-5));
    }
  }
}
