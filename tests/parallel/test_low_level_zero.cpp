// low_level_zero (ZeRO-1 and ZeRO-2) against torch_ddp on CPU ranks.
//
// Every rank builds the same problem from one seed (a tiny ViT, synthetic
// images, the global batches of 10 steps) and trains it with torch_ddp and
// with low_level_zero stage 1 and 2 over MPI_COMM_WORLD (run with 1, 2 and 4
// ranks by ctest), each rank on its slice of every global batch. The losses,
// grad_norm of every step, the first step's whole gradient (gathered) and the
// final parameters must agree; also with clipping on (a clip below the
// gradient norm, so a wrong norm moves the weights) and with gradient
// accumulation 2. Each rank must hold only its shard of the optimizer state.
//
// Tolerances: the plugins add the same fp32 numbers in another order (a
// reduce-scatter or all-reduce per bucket, the norm as a sum of per-shard
// sums), ~1e-7 relative per value. After 10 AdamW steps of lr 1e-3 (each
// moving a weight by at most ~1e-3) weights agree to 2e-5 absolute (and the
// first step's update to 1e-6 of a weight); losses and grad_norm to 1e-5
// relative. A wrong gradient scale (1/dp, 1/local batch, a missed loss-scale
// division) or a bucket part landing in the wrong place fails by orders of
// magnitude.
#define BOOST_TEST_MODULE low_level_zero
#include <boost/test/unit_test.hpp>

#include "common/mpi_main.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "comm/bootstrap.h"
#include "comm/process_mesh.h"
#include "core/rng.h"
#include "kernels/cpu_threads.h"
#include "model/params.h"
#include "parallel/plugin.h"

using namespace vit;

namespace {

constexpr int kGlobalBatch = 8;
constexpr int kSteps = 10;

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

struct Setup {
  std::string plugin = "torch_ddp";
  int stage = 2;
  int grad_accum = 1;
  float grad_clip = 0.0f;
  size_t bucket_bytes = 16 << 10;  // several buckets of this tiny model
  bool overlap = true;
};

struct Outcome {
  std::vector<double> losses, norms;
  std::vector<float> first_grads, params;
  size_t state_bytes = 0;
};

Outcome train(const Setup& s) {
  kernels::set_cpu_threads(1);
  const model::ViTConfig cfg = tiny_vit();
  const size_t per_image = static_cast<size_t>(cfg.image_size) * cfg.image_size * cfg.channels;
  std::vector<uint8_t> images(static_cast<size_t>(kSteps) * kGlobalBatch * per_image);
  std::vector<int32_t> labels(static_cast<size_t>(kSteps) * kGlobalBatch);
  Rng rng(4321);
  for (auto& p : images) p = static_cast<uint8_t>(rng.below(256));
  for (auto& l : labels) l = static_cast<int32_t>(rng.below(3));
  // The second step repeats the first global batch: after one update on it
  // its loss must be lower, a check that the setup trains at all.
  std::copy(images.begin(), images.begin() + kGlobalBatch * per_image, images.begin() + kGlobalBatch * per_image);
  std::copy(labels.begin(), labels.begin() + kGlobalBatch, labels.begin() + kGlobalBatch);

  comm::WorldInfo info = comm::query_world(MPI_COMM_WORLD);
  comm::ProcessMesh mesh(MPI_COMM_WORLD, info, 1, 1, false);
  parallel::PluginOptions opts;
  opts.name = s.plugin;
  opts.zero.stage = s.stage;
  opts.bucket_bytes = s.bucket_bytes;
  opts.overlap_comm = s.overlap;
  opts.weight_decay = 0.05f;
  opts.grad_clip = s.grad_clip;
  parallel::PluginEnv env{Context{}, &mesh};
  const int dp = mesh.dp_size(), per_rank = kGlobalBatch / dp, per_micro = per_rank / s.grad_accum;
  auto plugin = parallel::make_plugin(opts, cfg, model::ComputeConfig{}, per_micro, env);
  const model::ParamLayout layout(cfg);
  std::vector<float> init(static_cast<size_t>(layout.total()));
  model::init_params(layout, 0.02f, 42, init.data());
  plugin->load_params(init);

  Outcome out;
  out.state_bytes = plugin->optimizer_state_bytes();
  for (int step = 0; step < kSteps; ++step) {
    const int first = step * kGlobalBatch + mesh.dp_rank() * per_rank;
    std::vector<parallel::MicroBatch> micro(static_cast<size_t>(s.grad_accum));
    for (int m = 0; m < s.grad_accum; ++m) {
      micro[m].images = images.data() + static_cast<size_t>(first + m * per_micro) * per_image;
      micro[m].labels = labels.data() + first + m * per_micro;
      micro[m].count = per_micro;
    }
    const parallel::StepResult r = plugin->train_step(micro, kGlobalBatch, 1e-3f, 1.0f, step + 1);
    out.losses.push_back(r.loss);
    out.norms.push_back(r.grad_norm);
    if (step == 0) out.first_grads = plugin->gather_grads();
  }
  out.params = plugin->gather_params();
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

void expect_same(const Outcome& zero, const Outcome& ddp, const std::string& what) {
  BOOST_TEST_REQUIRE(zero.losses.size() == ddp.losses.size());
  for (size_t i = 0; i < ddp.losses.size(); ++i) {
    BOOST_TEST(zero.losses[i] == ddp.losses[i], boost::test_tools::tolerance(1e-5));
    BOOST_TEST(zero.norms[i] == ddp.norms[i], boost::test_tools::tolerance(1e-5));
  }
  BOOST_TEST(rel_l2(zero.first_grads, ddp.first_grads) < 1e-5, what << ": first step's gradient");
  // The largest gradient element is ~1e-2 here: 1e-7 absolute is 1e-5 of it.
  BOOST_TEST(max_abs_diff(zero.first_grads, ddp.first_grads) < 1e-7, what << ": first step's gradient, max abs");
  BOOST_TEST(max_abs_diff(zero.params, ddp.params) < 2e-5, what << ": final parameters");
  BOOST_TEST(ddp.losses[0] > ddp.losses[1], what << ": one step on the same batch lowers its loss: " << ddp.losses[0]
                                               << " -> " << ddp.losses[1]);
}

}  // namespace

BOOST_AUTO_TEST_CASE(stage_1_and_2_match_torch_ddp) {
  for (float clip : {0.0f, 0.05f}) {
    for (int accum : {1, 2}) {
      Setup ddp;
      ddp.grad_clip = clip;
      ddp.grad_accum = accum;
      const Outcome ref = train(ddp);
      if (clip > 0) BOOST_TEST(ref.norms.front() > 2 * clip);  // the clip really clips
      for (int stage : {1, 2}) {
        Setup z = ddp;
        z.plugin = "low_level_zero";
        z.stage = stage;
        expect_same(train(z), ref,
                    "stage " + std::to_string(stage) + " clip " + std::to_string(clip) + " accum " +
                        std::to_string(accum));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(one_bucket_and_no_overlap_give_the_same_result) {
  Setup ddp;
  const Outcome ref = train(ddp);
  for (int stage : {1, 2}) {
    Setup z;
    z.plugin = "low_level_zero";
    z.stage = stage;
    z.bucket_bytes = size_t(1) << 30;  // one bucket
    expect_same(train(z), ref, "one bucket, stage " + std::to_string(stage));
    z.bucket_bytes = 4 << 10;  // a bucket per segment
    z.overlap = false;
    expect_same(train(z), ref, "small buckets without overlap, stage " + std::to_string(stage));
  }
}

BOOST_AUTO_TEST_CASE(each_rank_holds_only_its_shard_of_the_optimizer_state) {
  const int dp = vit_mpi_size();
  const int64_t n = model::ParamLayout(tiny_vit()).total();
  Setup ddp;
  const size_t full = train(ddp).state_bytes;
  // torch_ddp: fp32 master (the parameters themselves) + m + v of the whole
  // (padded) model on every rank.
  BOOST_TEST(full >= static_cast<size_t>(3 * 4 * n));
  for (int stage : {1, 2}) {
    Setup z;
    z.plugin = "low_level_zero";
    z.stage = stage;
    const size_t mine = train(z).state_bytes;
    // 1/dp of the padded model (padding: at most dp * 64 elements per bucket).
    BOOST_TEST(mine * static_cast<size_t>(dp) == full, "stage " << stage << ": " << mine << " bytes on each of "
                                                               << dp << " ranks vs " << full << " for torch_ddp");
    BOOST_TEST_MESSAGE("stage " << stage << ": optimizer state " << mine << " bytes per rank, torch_ddp " << full);
  }
}
