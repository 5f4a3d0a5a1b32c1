// Unit tests of the pieces of training that need no kernels: the parameter
// layout and its initialisation, the learning-rate schedule, the loss scaler
// (and its resume from a checkpoint's train state).
#define BOOST_TEST_MODULE train_units
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <vector>

#include "model/params.h"
#include "core/error.h"
#include "train/gpu_power.h"
#include "train/loss_scaler.h"
#include "train/schedule.h"
#include "train/train_state.h"

using namespace vit;

BOOST_AUTO_TEST_CASE(vit_b16_has_the_published_parameter_count) {
  // ViTForImageClassification(google/vit-base-patch16-224) with a 3-label
  // head, as fine-tuned on Beans, has 85,800,963 parameters.
  model::ViTConfig cfg;
  cfg.num_classes = 3;
  model::ParamLayout layout(cfg);
  BOOST_TEST(layout.total() == 85800963);
  BOOST_TEST(cfg.tokens() == 197);
  BOOST_TEST(cfg.patch_dim() == 768);
  // Blocks are contiguous and ordered: block l ends where block l+1 begins.
  for (int l = 0; l + 1 < cfg.depth; ++l) BOOST_TEST(layout.block_range(l).second == layout.block_range(l + 1).first);
  BOOST_TEST(layout.embed_range().second == layout.block_range(0).first);
  BOOST_TEST(layout.block_range(cfg.depth - 1).second == layout.head_range().first);
  BOOST_TEST(layout.head_range().second == layout.total());
  BOOST_TEST(layout[layout.index_of("blocks.11.mlp.fc1.weight")].shape == (std::vector<int64_t>{3072, 768}));
  BOOST_CHECK_THROW(layout.index_of("blocks.12.ln1.weight"), Error);
}

BOOST_AUTO_TEST_CASE(initialisation_follows_the_published_recipe) {
  model::ViTConfig cfg;
  cfg.image_size = 32;
  cfg.patch_size = 8;
  cfg.hidden = 64;
  cfg.depth = 2;
  cfg.heads = 4;
  cfg.mlp_dim = 128;
  model::ParamLayout layout(cfg);
  std::vector<float> a(static_cast<size_t>(layout.total())), b(a.size());
  model::init_params(layout, 0.02f, 7, a.data());
  model::init_params(layout, 0.02f, 7, b.data());
  BOOST_TEST(a == b);  // deterministic for a seed
  for (const auto& p : layout.params()) {
    const float* v = a.data() + p.offset;
    double s = 0, s2 = 0;
    float lo = 1e9f, hi = -1e9f;
    for (int64_t i = 0; i < p.numel; ++i) {
      s += v[i];
      s2 += double(v[i]) * v[i];
      lo = std::min(lo, v[i]);
      hi = std::max(hi, v[i]);
    }
    if (p.init == model::Init::Zeros) BOOST_TEST((lo == 0.0f && hi == 0.0f), p.name);
    if (p.init == model::Init::Ones) BOOST_TEST((lo == 1.0f && hi == 1.0f), p.name);
    if (p.init == model::Init::TruncNormal) {
      // Cut at 2 std = 0.04; a normal truncated at +-2 sigma has std 0.88 sigma.
      BOOST_TEST((lo >= -0.04f && hi <= 0.04f), p.name);
      if (p.numel >= 4096) {
        const double sd = std::sqrt(s2 / p.numel - (s / p.numel) * (s / p.numel));
        BOOST_TEST(std::abs(sd - 0.88 * 0.02) < 0.002, p.name << " std " << sd);
      }
    }
  }
  std::vector<float> c(a.size());
  model::init_params(layout, 0.02f, 8, c.data());
  BOOST_TEST(a != c);  // another seed, other weights
}

BOOST_AUTO_TEST_CASE(warmup_then_cosine_to_zero) {
  // 100 steps, 30% warm-up: steps 1..30 rise linearly to the base rate,
  // then a half cosine reaches 0 at step 100.
  train::LrSchedule s(2e-4, 100, 0.3, train::Schedule::Cosine);
  BOOST_TEST(s.warmup_steps() == 30);
  BOOST_TEST(s.at(1) == 2e-4 / 30, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(s.at(15) == 1e-4, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(s.at(30) == 2e-4, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(s.at(65) == 1e-4, boost::test_tools::tolerance(1e-9));  // half-way through the decay
  BOOST_TEST(std::abs(s.at(100)) < 1e-15);
  for (int64_t i = 31; i < 100; ++i) BOOST_TEST_REQUIRE(s.at(i + 1) <= s.at(i));
  train::LrSchedule lin(1.0, 10, 0.0, train::Schedule::Linear);
  BOOST_TEST(lin.at(5) == 0.5, boost::test_tools::tolerance(1e-12));
  train::LrSchedule constant(3.0, 10, 0.5, train::Schedule::Constant);
  BOOST_TEST(constant.at(1) == 3.0);
  BOOST_CHECK_THROW(train::parse_schedule("step"), Error);
}

BOOST_AUTO_TEST_CASE(loss_scaler_backs_off_after_hysteresis_and_grows_after_interval) {
  train::LossScalerConfig c;
  c.enabled = true;
  c.initial_scale = 1024;
  c.growth_interval = 3;
  c.hysteresis = 2;
  c.min_scale = 256;
  c.max_scale = 4096;
  train::LossScaler s(c);
  BOOST_TEST(s.scale() == 1024.0f);
  s.update(true);  // first overflow: hysteresis absorbs it, the step is still skipped
  BOOST_TEST(s.scale() == 1024.0f);
  BOOST_TEST(s.skipped_steps() == 1);
  s.update(true);  // second: back off
  BOOST_TEST(s.scale() == 512.0f);
  s.update(false);
  s.update(false);
  BOOST_TEST(s.scale() == 512.0f);
  s.update(false);  // third clean step in a row: grow
  BOOST_TEST(s.scale() == 1024.0f);
  for (int i = 0; i < 30; ++i) s.update(false);
  BOOST_TEST(s.scale() == 4096.0f);  // capped at max_scale
  for (int i = 0; i < 30; ++i) s.update(true);
  BOOST_TEST(s.scale() == 256.0f);  // floored at min_scale
  train::LossScaler off(train::LossScalerConfig{});
  off.update(true);
  BOOST_TEST(off.scale() == 1.0f);  // disabled: fp32 and bf16 keep scale 1
}

BOOST_AUTO_TEST_CASE(loss_scaler_resumed_from_its_state_continues_exactly) {
  // The fp16 half of exact resume that needs no GPU: a scaler saved in the
  // middle of a hysteresis count and a growth interval (through the train
  // state's JSON, as a checkpoint stores it) and restored into a fresh one
  // follows the uninterrupted scaler step for step. Without the state (a
  // fresh scaler at the initial scale, as Colossal-AI resumes) it does not.
  train::LossScalerConfig c;
  c.enabled = true;
  c.initial_scale = 65536;
  c.growth_interval = 4;
  c.hysteresis = 3;
  // Overflows and clean steps, cut after step 9: two overflows into a
  // hysteresis of 3, and clean steps part-way into a growth interval.
  const std::vector<bool> overflow = {true, true, true, false, false, true, false, false, true, false,
                                      false, false, false, true, true, false, false, false, false, false};
  const size_t cut = 9;
  train::LossScaler straight(c), first(c);
  std::vector<float> want;
  for (bool o : overflow) {
    want.push_back(straight.scale());
    straight.update(o);
  }
  for (size_t i = 0; i < cut; ++i) first.update(overflow[i]);
  train::TrainState st;
  st.scaler = first.state();
  const train::TrainState back =
      train::train_state_from_json(nlohmann::json::parse(train::train_state_to_json(st).dump()), "test");
  train::LossScaler resumed(c), fresh(c);
  resumed.restore(back.scaler);
  bool fresh_differs = false;
  for (size_t i = cut; i < overflow.size(); ++i) {
    BOOST_TEST(resumed.scale() == want[i], "step " << i + 1);
    fresh_differs = fresh_differs || fresh.scale() != want[i];
    resumed.update(overflow[i]);
    fresh.update(overflow[i]);
  }
  BOOST_TEST(resumed.skipped_steps() == straight.skipped_steps());
  BOOST_TEST(fresh_differs);  // the state matters: this sequence can tell
}

BOOST_AUTO_TEST_CASE(train_state_round_trips_bitwise) {
  // Doubles that print long (a running loss sum) come back bit for bit.
  train::TrainState s;
  s.step = 123;
  s.adam_step = 120;
  s.epoch = 3;
  s.step_in_epoch = 17;
  s.images_in_epoch = 17 * 64;
  s.progress.loss_sum = 0.1 + 0.2 + 1.0 / 3.0;
  s.progress.images = 1088;
  s.scaler = {12345.678901234567, 7, 2, 5};
  s.base_lr = 2e-4 * 3;
  s.nonfinite_in_row = 2;
  s.seed = 42;
  s.augment_seed = 0xfedcba9876543210ull;
  s.metrics_bytes = {100, 200};
  s.model.hidden = 64;
  s.model.heads = 4;
  s.class_names = {"a", "b", "c"};
  const train::TrainState b =
      train::train_state_from_json(nlohmann::json::parse(train::train_state_to_json(s).dump()), "test");
  BOOST_TEST(b.progress.loss_sum == s.progress.loss_sum);
  BOOST_TEST(b.scaler.scale == s.scaler.scale);
  BOOST_TEST(b.scaler.clean_steps == 7);
  BOOST_TEST(b.scaler.overflows_left == 2);
  BOOST_TEST(b.base_lr == s.base_lr);
  BOOST_TEST(b.augment_seed == s.augment_seed);
  BOOST_TEST(b.step_in_epoch == 17);
  BOOST_TEST(b.images_in_epoch == 17 * 64);
  BOOST_TEST(b.metrics_bytes == s.metrics_bytes);
  BOOST_TEST(b.model.hidden == 64);
  nlohmann::json broken = train::train_state_to_json(s);
  broken.erase("adam_step");
  BOOST_CHECK_EXCEPTION(train::train_state_from_json(broken, "ck/train_state.json"), UserError,
                        [](const UserError& e) {
                          return std::string(e.what()) == "ck/train_state.json: field \"adam_step\" is missing";
                        });
}

// The benchmark's GPU power summary (train/gpu_power.h): median and lowest SM
// clock, the shares of samples held at the power limit (software cap or
// power brake) and slowed for temperature; the mean power between the energy
// counter's first and last step in the stretch (energy = that x the
// stretch's time), or the mean sampled power where it stepped less than
// twice.
BOOST_AUTO_TEST_CASE(gpu_power_summary_of_samples) {
  using vit::train::EnergyStep;
  using vit::train::PowerSample;
  const std::vector<PowerSample> samples{{1600, 690, 0x4}, {1500, 700, 0x4 | 0x1}, {1980, 300, 0}, {1605, 650, 0x80},
                                         {1590, 695, 0x20}};
  // Steps at 0.1, 0.2 and 0.4 s: 60 J over 0.3 s between the first and the last.
  const std::vector<EnergyStep> steps{{0.1, 1000.0}, {0.2, 1030.0}, {0.4, 1060.0}};
  const auto s = vit::train::summarize_power(samples, steps, 0.5, 700, 1980);
  BOOST_TEST_REQUIRE(s.measured);
  BOOST_TEST(s.samples == 5);
  BOOST_TEST(s.sm_clock_median_mhz == 1600.0);
  BOOST_TEST(s.sm_clock_min_mhz == 1500.0);
  BOOST_TEST(s.power_capped_share == 3.0 / 5.0);
  BOOST_TEST(s.thermal_share == 1.0 / 5.0);
  BOOST_TEST(s.energy_counted);
  BOOST_TEST(s.counter_span_s == 0.3, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(s.power_mean_w == 200.0, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(s.energy_j == 100.0, boost::test_tools::tolerance(1e-12));
  // An even count: the median is the mean of the middle two.
  const auto even = vit::train::summarize_power({{1000, 1, 0}, {1200, 1, 0}, {1100, 1, 0}, {1300, 3, 0}}, {}, 2.0, 0, 0);
  BOOST_TEST(even.sm_clock_median_mhz == 1150.0);
  // No counter steps: the mean sampled power over the stretch; one step is not enough either.
  BOOST_TEST(!even.energy_counted);
  BOOST_TEST(even.power_mean_w == 1.5);
  BOOST_TEST(even.energy_j == 3.0);
  const auto one = vit::train::summarize_power(samples, {{0.1, 1000.0}}, 0.5, 700, 1980);
  BOOST_TEST(!one.energy_counted);
  BOOST_TEST(one.energy_j == (690.0 + 700 + 300 + 650 + 695) / 5 * 0.5, boost::test_tools::tolerance(1e-12));
  // The line the benchmark prints.
  const std::string line = vit::train::describe_power(s, s.energy_j / 200);
  BOOST_TEST(line == "GPU power: 200 W mean (limit 700 W), SM clock median 1600 MHz (min 1500, max 1980), held at "
                     "the power limit in 60% of 5 samples, slowed for temperature in 20%; 0.500 J per image");
  // Nothing to summarise: not measured, and the line says why.
  const auto none = vit::train::summarize_power({}, steps, 1.0, 700, 1980);
  BOOST_TEST(!none.measured);
  BOOST_TEST(vit::train::describe_power(none, 1.0).rfind("GPU power: not measured (no samples", 0) == 0u);
}

// A CPU run measures nothing; a GPU that NVML cannot open (no driver here,
// or a bus id no GPU has) is "not measured" with the reason, never an error.
BOOST_AUTO_TEST_CASE(gpu_power_meter_without_a_gpu_says_why) {
  vit::train::GpuPowerMeter cpu("");
  cpu.start();
  const auto s = cpu.stop();
  BOOST_TEST(!s.measured);
  BOOST_TEST(s.why_not == "not a GPU run");
  vit::train::GpuPowerMeter nowhere("00000000:ff:1f.7");
  nowhere.start();
  const auto n = nowhere.stop();
  BOOST_TEST(!n.measured);
  BOOST_TEST(!n.why_not.empty());
  BOOST_TEST_MESSAGE("bus id of no GPU: " << n.why_not);
}
