// gemini (chunked ZeRO-3 with prefetch and CPU offload) against torch_ddp on
// CPU ranks.
//
// Every rank builds the same problem from one seed (a tiny ViT, synthetic
// images, the global batches of 10 steps) and trains it with torch_ddp and
// with gemini over MPI_COMM_WORLD (run with 1, 2 and 4 ranks by ctest), each
// rank on its slice of every global batch. The losses, grad_norm of every
// step, the first step's whole gradient (gathered) and the final parameters
// must agree: with clipping on (a clip below the gradient norm, so a wrong
// norm moves the weights), with gradient accumulation 2, with the optimizer
// states of 0, half and all of the chunks offloaded (on the CPU "offloaded"
// is another host buffer, but the code path is the offload path: host
// gradient parts, the norm summed from host and device parts, the CPU AdamW,
// the upload of the updated part), with parameter offload, with chunks of
// one segment (more chunks than pool slots: gathers evict and prefetch), of
// one or two segments, and one chunk for the whole model; with a loss scale
// (undone on both optimizer paths) and with overflowing gradients (every
// step skipped on every rank, nothing moves). Also: loaded weights are what
// the first forward uses, each rank holds 1/dp of the state and a step's
// peak memory is a few chunks plus that part, and a parameter offload above
// the optimizer offload is refused.
//
// Tolerances (the low_level_zero reasoning, which applies unchanged): the
// plugins add the same fp32 numbers in another order (a reduce-scatter per
// chunk and micro-batch instead of a local sum then an all-reduce, the norm
// as a sum of per-part sums), ~1e-7 relative per value. After 10 AdamW steps
// of lr 1e-3 (each moving a weight by at most ~1e-3) weights agree to 2e-5
// absolute; losses and grad_norm to 1e-5 relative; the first step's gradient
// to 1e-5 relative L2 and 1e-7 absolute (its largest element is ~1e-2). A
// chunk gathered from stale or wrong parts, a gradient part added at the wrong
// place or twice, a wrong scale (1/dp, a missed loss-scale division) or a
// norm that misses a rank's or the host's parts fails by orders of magnitude.
#define BOOST_TEST_MODULE gemini
#include <boost/test/unit_test.hpp>

#include "common/mpi_main.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "comm/bootstrap.h"
#include "comm/process_mesh.h"
#include "core/device.h"
#include "core/rng.h"
#include "kernels/cpu_threads.h"
#include "model/params.h"
#include "model/vit.h"
#include "parallel/gemini.h"
#include "parallel/plugin.h"

#include "same_bits_check.h"

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

// fp32 bytes of one block of tiny_vit (7504 parameters): chunks of 16 KiB
// hold one segment each (5 chunks, more than the pool's 3 slots), 40 KiB one
// or two (head + block 2, block 1, block 0 + embeddings).
constexpr size_t kOneSegment = 16 << 10;
constexpr size_t kOneOrTwo = 40 << 10;
constexpr size_t kOneChunk = size_t(1) << 30;

struct Setup {
  std::string plugin = "torch_ddp";
  int grad_accum = 1;
  float grad_clip = 0.0f;
  size_t chunk_bytes = kOneSegment;
  float offload = 0.0f, param_offload = 0.0f;
  bool overlap = true;
  int steps = kSteps;
  float init_shift = 0.0f;  // added to every initial weight ("pretrained" weights unlike a fresh init)
  float loss_scale = 1.0f;
  bool poison_head = false;  // head weights of 3e38: logits, loss and gradients overflow on every step
  parallel::GeminiOptions::CpuUpdate cpu_update = parallel::GeminiOptions::CpuUpdate::Overlap;
  bool eval_second = false;    // an evaluation batch after the second step
  bool export_state = false;   // the checkpoint state (master, m, v) after the last step
};

struct Outcome {
  std::vector<double> losses, norms;
  std::vector<bool> skipped;
  std::vector<float> init, first_grads, params;
  std::vector<float> state;          // export_state: master, m, v back to back
  std::vector<double> eval_losses;   // eval_second: summed loss of the evaluation
  size_t state_bytes = 0;
};

std::string describe(const Setup& s) {
  return s.plugin + " chunk " + std::to_string(s.chunk_bytes) + " offload " + std::to_string(s.offload) +
         " param offload " + std::to_string(s.param_offload) + " clip " + std::to_string(s.grad_clip) + " accum " +
         std::to_string(s.grad_accum) + (s.overlap ? "" : " no overlap") +
         (s.cpu_update == parallel::GeminiOptions::CpuUpdate::Overlap       ? ""
          : s.cpu_update == parallel::GeminiOptions::CpuUpdate::Synchronous ? " synchronous cpu update"
                                                                            : " on-demand cpu update");
}

parallel::PluginOptions options(const Setup& s) {
  parallel::PluginOptions opts;
  opts.name = s.plugin;
  opts.bucket_bytes = 16 << 10;  // torch_ddp: several buckets
  opts.overlap_comm = s.overlap;
  opts.weight_decay = 0.05f;
  opts.grad_clip = s.grad_clip;
  opts.gemini.chunk_bytes = s.chunk_bytes;
  opts.gemini.offload_optim_frac = s.offload;
  opts.gemini.offload_param_frac = s.param_offload;
  opts.gemini.cpu_update = s.cpu_update;
  return opts;
}

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
  parallel::PluginEnv env{Context{}, &mesh};
  const int dp = mesh.dp_size(), per_rank = kGlobalBatch / dp, per_micro = per_rank / s.grad_accum;
  auto plugin = parallel::make_plugin(options(s), cfg, model::ComputeConfig{}, per_micro, env);
  const model::ParamLayout layout(cfg);
  std::vector<float> init(static_cast<size_t>(layout.total()));
  model::init_params(layout, 0.02f, 42, init.data());
  for (float& w : init) w += s.init_shift;
  if (s.poison_head) {
    const model::ParamInfo& h = layout[layout.head_w];
    std::fill(init.begin() + h.offset, init.begin() + h.offset + h.numel, 3e38f);
  }
  plugin->load_params(init);

  Outcome out;
  out.init = init;
  out.state_bytes = plugin->optimizer_state_bytes();
  int64_t adam_step = 1;  // counts applied steps, as the trainer does
  for (int step = 0; step < s.steps; ++step) {
    const int first = step * kGlobalBatch + mesh.dp_rank() * per_rank;
    std::vector<parallel::MicroBatch> micro(static_cast<size_t>(s.grad_accum));
    for (int m = 0; m < s.grad_accum; ++m) {
      micro[m].images = images.data() + static_cast<size_t>(first + m * per_micro) * per_image;
      micro[m].labels = labels.data() + first + m * per_micro;
      micro[m].count = per_micro;
    }
    const parallel::StepResult r = plugin->train_step(micro, kGlobalBatch, 1e-3f, s.loss_scale, adam_step);
    if (!r.skipped) ++adam_step;
    out.losses.push_back(r.loss);
    out.norms.push_back(r.grad_norm);
    out.skipped.push_back(r.skipped);
    if (step == 0) out.first_grads = plugin->gather_grads();
    if (s.eval_second && step == 1) {
      const parallel::EvalResult e = plugin->all_reduce_eval(plugin->eval_batch(micro[0]));
      out.eval_losses.push_back(e.loss_sum);
    }
  }
  if (s.export_state) {
    for (parallel::StatePart part : parallel::kStateParts) {
      const std::vector<float> v = plugin->export_state(part);
      out.state.insert(out.state.end(), v.begin(), v.end());
    }
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

void expect_same(const Outcome& g, const Outcome& ddp, const std::string& what) {
  BOOST_TEST_CONTEXT(what) {
    BOOST_TEST_REQUIRE(g.losses.size() == ddp.losses.size());
    for (size_t i = 0; i < ddp.losses.size(); ++i) {
      BOOST_TEST(g.losses[i] == ddp.losses[i], boost::test_tools::tolerance(1e-5));
      BOOST_TEST(g.norms[i] == ddp.norms[i], boost::test_tools::tolerance(1e-5));
    }
    BOOST_TEST_REQUIRE(g.first_grads.size() == ddp.first_grads.size());
    BOOST_TEST(rel_l2(g.first_grads, ddp.first_grads) < 1e-5, "first step's gradient, rel L2");
    BOOST_TEST(max_abs_diff(g.first_grads, ddp.first_grads) < 1e-7, "first step's gradient, max abs");
    BOOST_TEST(max_abs_diff(g.params, ddp.params) < 2e-5, "final parameters, max abs");
    BOOST_TEST(ddp.losses[0] > ddp.losses[1], "one step on the same batch lowers its loss: " << ddp.losses[0] << " -> "
                                                                                          << ddp.losses[1]);
  }
}

Setup gemini(size_t chunk_bytes, float offload, const Setup& base) {
  Setup s = base;
  s.plugin = "gemini";
  s.chunk_bytes = chunk_bytes;
  s.offload = offload;
  return s;
}

}  // namespace

BOOST_AUTO_TEST_CASE(chunks_are_whole_segments_and_offload_takes_the_nearest_fraction) {
  const model::ParamLayout layout(tiny_vit());
  const auto one = parallel::gemini_chunk_groups(layout, kOneSegment / 4);
  BOOST_TEST(one.size() == 5u);  // head, block 2, block 1, block 0, embeddings
  for (const auto& g : one) BOOST_TEST(g.size() == 1u);
  BOOST_TEST(one.front().front().kind == model::Segment::Head);
  BOOST_TEST(one.back().front().kind == model::Segment::Embed);
  const auto two = parallel::gemini_chunk_groups(layout, kOneOrTwo / 4);
  BOOST_TEST_REQUIRE(two.size() == 3u);
  BOOST_TEST(two[0].size() == 2u);  // head + block 2
  BOOST_TEST(two[1].size() == 1u);  // block 1
  BOOST_TEST(two[2].size() == 2u);  // block 0 + embeddings
  for (const auto& g : two) {
    int64_t n = 0;
    for (const auto& s : g) n += layout.range(s).second - layout.range(s).first;
    BOOST_TEST(n <= static_cast<int64_t>(kOneOrTwo / 4));
  }
  BOOST_TEST(parallel::gemini_chunk_groups(layout, kOneChunk / 4).size() == 1u);

  const std::vector<int64_t> sizes = {10, 40, 40, 10};
  BOOST_TEST(parallel::gemini_offload_count(sizes, 0.0f) == 0);
  BOOST_TEST(parallel::gemini_offload_count(sizes, 0.01f) == 1);  // any fraction offloads something
  BOOST_TEST(parallel::gemini_offload_count(sizes, 0.5f) == 2);   // 50 of 100
  BOOST_TEST(parallel::gemini_offload_count(sizes, 0.9f) == 3);   // 90 of 100
  BOOST_TEST(parallel::gemini_offload_count(sizes, 1.0f) == 4);
}

BOOST_AUTO_TEST_CASE(matches_torch_ddp_with_clipping_accumulation_and_offload) {
  for (float clip : {0.0f, 0.05f}) {
    for (int accum : {1, 2}) {
      Setup ddp;
      ddp.grad_clip = clip;
      ddp.grad_accum = accum;
      const Outcome ref = train(ddp);
      if (clip > 0) BOOST_TEST(ref.norms.front() > 2 * clip);  // the clip really clips
      for (float offload : {0.0f, 0.5f, 1.0f}) {
        const Setup g = gemini(kOneSegment, offload, ddp);
        expect_same(train(g), ref, describe(g));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(any_chunking_parameter_offload_and_no_overlap_give_the_same_result) {
  Setup ddp;
  ddp.grad_clip = 0.05f;
  ddp.grad_accum = 2;
  const Outcome ref = train(ddp);
  for (size_t chunk : {kOneOrTwo, kOneChunk}) {
    for (float offload : {0.0f, 1.0f}) {
      const Setup g = gemini(chunk, offload, ddp);
      expect_same(train(g), ref, describe(g));
    }
  }
  Setup p = gemini(kOneSegment, 1.0f, ddp);
  p.param_offload = 1.0f;
  expect_same(train(p), ref, describe(p));
  p = gemini(kOneOrTwo, 0.5f, ddp);
  p.param_offload = 0.5f;
  expect_same(train(p), ref, describe(p));
  p = gemini(kOneSegment, 0.5f, ddp);
  p.overlap = false;  // no prefetch
  expect_same(train(p), ref, describe(p));
}

// The CPU AdamW of offloaded chunks runs on a worker thread while the next
// step's forward goes on; each gather waits for its own chunk, and
// evaluation and the state export wait for every update. Against the
// synchronous finish the results must be the same bits: the updates are the
// same element-wise arithmetic, only later. The on-demand mode holds every
// update until something asks for its chunk, so a gather (or export) that
// did not wait would read the previous step's weights every time, not only
// when the worker happens to be slow: the run would then differ by whole
// AdamW steps (seen failing with collect_update's wait removed).
// Offload 0.5 and 1, with and without parameter offload, one and two
// micro-batches (the norm's share of the offloaded parts taken on the
// device or on the host), clipping on. 5 steps: the first one's gradient is
// gathered and the second is followed by an evaluation (both wait for the
// updates), the forwards of the fourth and fifth overlap the last step's.
BOOST_AUTO_TEST_CASE(cpu_updates_overlapping_the_next_forward_give_the_synchronous_bits) {
  using Mode = parallel::GeminiOptions::CpuUpdate;
  for (float offload : {0.5f, 1.0f}) {
    for (bool param_offload : {false, true}) {
      for (int accum : {1, 2}) {
        Setup base = gemini(kOneSegment, offload, Setup());
        base.param_offload = param_offload ? offload : 0.0f;
        base.grad_accum = accum;
        base.grad_clip = 0.05f;
        base.steps = 5;
        base.eval_second = true;
        base.export_state = true;
        Setup sync = base;
        sync.cpu_update = Mode::Synchronous;
        const Outcome ref = train(sync);
        for (Mode mode : {Mode::Overlap, Mode::OnDemand}) {
          Setup s = base;
          s.cpu_update = mode;
          const Outcome out = train(s);
          BOOST_TEST_CONTEXT(describe(s)) { same_bits::check(out, ref); }
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(pretrained_weights_are_what_the_first_forward_uses) {
  // Weights unlike any fresh initialisation (every weight shifted by 0.05):
  // step 1's loss must be torch_ddp's from the same weights, not the loss of
  // the fresh init, which differs by far more than the bound (checked).
  Setup ddp;
  ddp.steps = 1;
  ddp.init_shift = 0.05f;
  const Outcome ref = train(ddp);
  Setup fresh = ddp;
  fresh.init_shift = 0.0f;
  const Outcome fresh_ref = train(fresh);
  BOOST_TEST(std::abs(fresh_ref.losses[0] - ref.losses[0]) > 1e-3 * ref.losses[0]);
  // fp32 compute reads the master weights where both live together
  // (offload 0, and 1 with parameter offload); offload 1 without parameter
  // offload keeps a separate compute copy on the "device".
  for (float param_offload : {-1.0f, 0.0f, 1.0f}) {
    Setup g = gemini(kOneSegment, param_offload < 0 ? 0.0f : 1.0f, ddp);
    g.param_offload = std::max(0.0f, param_offload);
    const Outcome out = train(g);
    // The same forward on the same weights: only the loss's summation over
    // ranks can differ, 1e-6 relative at most.
    BOOST_TEST(out.losses[0] == ref.losses[0], boost::test_tools::tolerance(1e-6));
    BOOST_TEST(out.norms[0] == ref.norms[0], boost::test_tools::tolerance(1e-5));
  }
}

BOOST_AUTO_TEST_CASE(refuses_parameter_offload_beyond_optimizer_offload) {
  comm::WorldInfo info = comm::query_world(MPI_COMM_WORLD);
  comm::ProcessMesh mesh(MPI_COMM_WORLD, info, 1, 1, false);
  parallel::PluginEnv env{Context{}, &mesh};
  Setup s = gemini(kOneSegment, 0.5f, Setup());
  s.param_offload = 1.0f;
  BOOST_CHECK_THROW(parallel::make_plugin(options(s), tiny_vit(), model::ComputeConfig{}, 2, env), UserError);
}

BOOST_AUTO_TEST_CASE(each_rank_holds_its_part_and_a_step_a_few_chunks) {
  // A model whose parameters outweigh its activations (12 blocks of 33472
  // parameters, 131 KiB fp32 each; 2 images of 17 tokens a rank), one block
  // a chunk.
  kernels::set_cpu_threads(1);
  model::ViTConfig cfg = tiny_vit();
  cfg.hidden = 64;
  cfg.heads = 4;
  cfg.mlp_dim = 128;
  cfg.depth = 12;
  const int64_t N = model::ParamLayout(cfg).total();
  const size_t block_bytes = 33472 * 4;
  comm::WorldInfo info = comm::query_world(MPI_COMM_WORLD);
  comm::ProcessMesh mesh(MPI_COMM_WORLD, info, 1, 1, false);
  parallel::PluginEnv env{Context{}, &mesh};
  const int dp = mesh.dp_size(), B = 2;
  std::vector<float> init(static_cast<size_t>(N));
  model::init_params(model::ParamLayout(cfg), 0.02f, 42, init.data());
  const size_t per_image = static_cast<size_t>(cfg.image_size) * cfg.image_size * cfg.channels;
  std::vector<uint8_t> images(B * per_image, 7);
  std::vector<int32_t> labels(B, 1);
  std::vector<parallel::MicroBatch> micro(1);
  micro[0].images = images.data();
  micro[0].labels = labels.data();
  micro[0].count = B;

  const size_t base = memory_stats(Device::CPU).current_bytes;
  size_t model_bytes = 0;  // activations and backward scratch of the model alone
  {
    model::ViTModel m(cfg, model::ComputeConfig{}, Context{}, B);
    model_bytes = memory_stats(Device::CPU).current_bytes - base;
  }
  struct Use {
    size_t resident = 0, peak = 0, state = 0;
  };
  auto measure = [&](const std::string& name, float offload) {
    Setup s = gemini(block_bytes, offload, Setup());
    s.plugin = name;
    Use u;
    auto plugin = parallel::make_plugin(options(s), cfg, model::ComputeConfig{}, B, env);
    plugin->load_params(init);
    u.resident = memory_stats(Device::CPU).current_bytes - base;
    reset_peak_memory(Device::CPU);
    plugin->train_step(micro, static_cast<int64_t>(B) * dp, 1e-3f, 1.0f, 1);
    u.peak = memory_stats(Device::CPU).peak_bytes - base;
    u.state = plugin->optimizer_state_bytes();
    return u;
  };
  const Use ddp = measure("torch_ddp", 0.0f);
  const Use gem = measure("gemini", 0.0f);
  const Use off = measure("gemini", 1.0f);
  // Optimizer state: fp32 master + m + v, 1/dp of the padded model (each of
  // 14 chunks padded to a multiple of dp * 64 elements).
  const size_t whole_state = static_cast<size_t>(N) * 12;
  const size_t padding = 14 * static_cast<size_t>(dp) * 64 * 12;
  for (const Use* u : {&gem, &off}) {
    BOOST_TEST(u->state * dp >= whole_state);
    BOOST_TEST(u->state * dp <= whole_state + padding);
  }
  BOOST_TEST(ddp.state >= whole_state);
  // A rank's peak during a step: the model's activations, its parts of every
  // chunk (fp32 master, m, v, gradient: 16 bytes an element; the fp32 compute
  // copy is the master itself) and the pool: 3 gathered chunks and 2
  // gradient chunks, plus small change (batch staging, scalars; 64 KiB).
  // The whole model's parameters (16 bytes an element with torch_ddp) never
  // sit there at once.
  const size_t parts = gem.state / 3 * 4;
  const size_t pool = 5 * (block_bytes + static_cast<size_t>(dp) * 64 * 4);
  BOOST_TEST(gem.peak <= model_bytes + parts + pool + (64 << 10),
             "gemini peak " << gem.peak << " > model " << model_bytes << " + parts " << parts << " + pool " << pool);
  BOOST_TEST(ddp.peak >= model_bytes + static_cast<size_t>(N) * 16);
  if (dp >= 2) BOOST_TEST(gem.peak - model_bytes < ddp.peak - model_bytes);
  if (dp >= 4) BOOST_TEST(gem.peak - model_bytes < (ddp.peak - model_bytes) / 2);
  BOOST_TEST_MESSAGE("per rank of " << dp << ": model activations " << model_bytes << " B; torch_ddp resident "
                                    << ddp.resident << " peak " << ddp.peak << "; gemini resident " << gem.resident
                                    << " peak " << gem.peak << "; gemini offload 1 resident " << off.resident
                                    << " peak " << off.peak << " (host and device are one on the CPU)");
}

BOOST_AUTO_TEST_CASE(loss_scale_is_undone_and_an_overflow_skips_the_step_on_every_rank) {
  // A loss scale of 1024 (a power of two: the scaled fp32 gradients are
  // exact multiples) must give torch_ddp's results at the same scale, and
  // the unscaled grad_norm and gradient: gemini's offload path divides by the
  // scale on the host, the device path in the step finisher.
  Setup ddp;
  ddp.grad_clip = 0.05f;
  ddp.loss_scale = 1024.0f;
  const Outcome ref = train(ddp);
  Setup unscaled = ddp;
  unscaled.loss_scale = 1.0f;
  BOOST_TEST(train(unscaled).norms[0] == ref.norms[0], boost::test_tools::tolerance(1e-6));
  for (float offload : {0.0f, 0.5f, 1.0f}) {
    const Setup g = gemini(kOneSegment, offload, ddp);
    expect_same(train(g), ref, describe(g) + " loss scale 1024");
  }
  // Head weights of 3e38 overflow the logits, so the loss and every
  // gradient are inf/NaN on every step (fp32 cannot overflow through the
  // loss scale alone): every rank must skip every step (the non-finite flag
  // is summed over the ranks, from the host's parts and the device's) and no
  // weight may move, the offloaded ones included.
  Setup over;
  over.poison_head = true;
  over.steps = 3;
  for (float offload : {0.0f, 0.5f, 1.0f}) {
    Setup g = gemini(kOneSegment, offload, over);
    g.param_offload = offload;
    const Outcome out = train(g);
    BOOST_TEST_CONTEXT(describe(g) << " with overflowing logits") {
      for (bool skipped : out.skipped) BOOST_TEST(skipped);
      BOOST_TEST(out.params == out.init, boost::test_tools::per_element());
    }
  }
}
