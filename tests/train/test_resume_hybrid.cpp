// hybrid_parallel training-state checkpoints end to end on the CPU, through
// mpirun, on the Beans images (the prepare_beans_64 fixture):
//   - exact resume: 12 steps straight vs stopped after step 6
//     (checkpoint.stop_after_steps) and resumed, for tp2 and pp2 (2 pipeline
//     micro-batches) on 2 ranks, and pp2 x dp2 and tp2 x dp2 with ZeRO-1
//     and tp2 x pp2 on 4 ranks: the step lines (loss, grad norm, lr, ...)
//     and the exported weights bit for bit; rank 0 reads exactly the state
//     of the parameters it holds;
//   - another layout: a 2-rank torch_ddp checkpoint resumed by tp2 and by
//     pp2, and the tp2 checkpoint resumed by torch_ddp on 1 rank: the next
//     losses and grad norms within the bound of a layout change that
//     test_resume uses for torch_ddp -> low_level_zero (1e-5 relative: only
//     the order of the fp32 sums differs; hybrid_parallel follows torch_ddp
//     within it from the start, test_e2e_hybrid).
//   - the training recipe (mixup/cutmix, label smoothing, drop path,
//     dropout, layer-wise lr decay, no decay on biases/norms) with the
//     weight average: exact resume for tp2 and pp2 x dp2 with ZeRO-1 (the
//     checkpoint holds the part "ema"; step lines and the exported average
//     bit for bit), and a 2-rank torch_ddp checkpoint with its average
//     resumed by tp2: the average continues (the final validation, run with
//     it, within 1e-5 of the straight torch_ddp run's).
// The model is test_resume's tiny one (heads 4, mlp_dim 128: both split
// over 2 tp ranks; depth 2: one block per pipeline stage), the global batch
// 16 in every layout.
#define BOOST_TEST_MODULE resume_hybrid
#include <boost/test/unit_test.hpp>

#include <map>

#include "resume_util.h"

using namespace e2e;

namespace {

const std::string kTiny =
    " --set model.patch_size=16 --set model.hidden=64 --set model.mlp_dim=128 --set model.depth=2 --set model.heads=4 ";
const std::string kCommon = kTiny + " --set eval.enabled=false --set eval.test_at_end=false --set train.steps=12 "
                                    "--set train.lr=2e-3 ";
const std::string kHybrid = " --set plugin.name=hybrid_parallel ";

// vit_hpc on the base spec plus `extra` (output appended to <name>.log).
int run_vit(int ranks, const std::string& name, const std::string& extra) { return run_appending(ranks, name, extra); }

std::vector<json> steps_of(const std::string& run, int rank = 0) { return lines_of(run, "step", rank); }

// The reference of the layout changes: torch_ddp on 2 ranks, 12 steps straight.
const std::string& ddp_straight() {
  static const std::string name = [] {
    BOOST_TEST_REQUIRE(run_vit(2, "ddp_straight", kCommon + " --set train.batch_size=8") == 0);
    return std::string("ddp_straight");
  }();
  return name;
}

// Steps 7..12 of `run` (a resume from the step-6 checkpoint) follow the
// straight torch_ddp run within 1e-5 relative (the bound and its reason:
// the file's opening comment).
void follows_ddp_from_step_7(const std::string& run) {
  BOOST_TEST_REQUIRE(steps_of(ddp_straight()).size() == 12u);
  steps_follow(run, ddp_straight(), 7, 1e-5);
}

// Rank 0 of a resumed hybrid run read only its own state: master, m and v
// (3 x 4 bytes) of each parameter it holds (its tp slices of the split
// tensors, the whole of the replicated ones), as its last resume's log lines
// say ("this rank read N bytes", "(H of T parameters)"): exactly that, or
// with ZeRO-1 over 2 dp ranks its half (the bucket parts are aligned to 64
// elements: within 45% to 55%).
void read_only_what_it_holds(const std::string& run, bool zero1 = false) {
  const std::string log = log_of(run);
  const size_t read_at = log.rfind("this rank read "), held_at = log.rfind(" of ", log.rfind(" parameters)"));
  BOOST_TEST_REQUIRE(read_at != std::string::npos, run << ": no resume note in the log");
  BOOST_TEST_REQUIRE(held_at != std::string::npos, run << ": no hybrid_parallel note in the log");
  const int64_t bytes = std::stoll(log.substr(read_at + 15));
  const int64_t held = std::stoll(log.substr(log.rfind('(', held_at) + 1));
  const int64_t total = std::stoll(log.substr(held_at + 4));
  BOOST_TEST(held < total, run << ": rank 0 holds all " << total << " parameters: not a sharded layout");
  if (!zero1) {
    BOOST_TEST(bytes == 12 * held, run << ": rank 0 read " << bytes << " bytes for " << held << " parameters");
  } else {
    BOOST_TEST(bytes > 0.45 * 12 * held, run << ": rank 0 read " << bytes << " bytes for " << held << " parameters");
    BOOST_TEST(bytes < 0.55 * 12 * held, run << ": rank 0 read " << bytes << " bytes for " << held << " parameters");
  }
}

struct Layout {
  std::string tag;
  int ranks;
  std::string args;  // plugin and per-rank batch (global batch 16)
};

const std::vector<Layout>& exact_layouts() {
  static const std::vector<Layout> v = {
      {"tp2", 2, kHybrid + " --set plugin.tp_size=2 --set train.batch_size=16"},
      {"pp2", 2, kHybrid + " --set plugin.pp_size=2 --set plugin.num_microbatches=2 --set train.batch_size=16"},
      {"pp2dp2z1", 4,
       kHybrid + " --set plugin.pp_size=2 --set plugin.num_microbatches=2 --set plugin.zero_stage=1 "
                 "--set train.batch_size=8"},
      {"tp2dp2z1", 4, kHybrid + " --set plugin.tp_size=2 --set plugin.zero_stage=1 --set train.batch_size=8"},
      {"tp2pp2", 4,
       kHybrid + " --set plugin.tp_size=2 --set plugin.pp_size=2 --set plugin.num_microbatches=2 "
                 "--set train.batch_size=16"},
  };
  return v;
}

}  // namespace

BOOST_AUTO_TEST_CASE(exact_resume_for_tp2_pp2_and_zero1_layouts) {
  for (const Layout& lay : exact_layouts()) {
    BOOST_TEST_CONTEXT(lay.tag) {
      const std::string straight = lay.tag + "_straight";
      BOOST_TEST_REQUIRE(run_vit(lay.ranks, straight,
                                 kCommon + lay.args + " --set checkpoint.export_hf=" + export_dir(straight)) == 0);
      const std::string cut = kCommon + lay.args + " --set checkpoint.dir=" + ck(lay.tag) +
                              " --set checkpoint.export_hf=" + export_dir(lay.tag);
      BOOST_TEST_REQUIRE(run_vit(lay.ranks, lay.tag, cut + " --set checkpoint.stop_after_steps=6") == 75);
      BOOST_TEST(manifest(lay.tag)["status"] == "interrupted");
      BOOST_TEST(slurp(ck(lay.tag) + "/latest") == "step_000006\n");
      // The tp2 checkpoint goes on to torch_ddp on 1 rank (the last case):
      // a copy, as the resume below writes checkpoints of its own there.
      if (lay.tag == "tp2") fs::copy(ck("tp2"), ck("tp2_to_ddp1"), fs::copy_options::recursive);
      BOOST_TEST_REQUIRE(run_vit(lay.ranks, lay.tag, cut) == 0);
      BOOST_TEST(manifest(lay.tag)["status"] == "completed");
      BOOST_TEST(manifest(lay.tag)["resumes"].size() == 1u);
      same_steps(lay.tag, straight, 1, 12);
      read_only_what_it_holds(lay.tag, contains(lay.args, "zero_stage=1"));
      const std::string w = exported(lay.tag);
      BOOST_TEST(!w.empty());
      BOOST_TEST((w == exported(straight)), lay.tag << ": exported weights differ from the straight run's");
    }
  }
}

BOOST_AUTO_TEST_CASE(torch_ddp_checkpoint_resumes_into_tp2_and_pp2) {
  ddp_straight();
  BOOST_TEST_REQUIRE(run_vit(2, "ddp_cut", kCommon + " --set train.batch_size=8 --set checkpoint.dir=" + ck("ddp") +
                                               " --set checkpoint.stop_after_steps=6") == 75);
  same_steps("ddp_cut", ddp_straight(), 1, 6);
  for (const std::string c : {"ddp_to_tp2", "ddp_to_pp2"}) fs::copy(ck("ddp"), ck(c), fs::copy_options::recursive);
  BOOST_TEST_REQUIRE(run_vit(2, "ddp_to_tp2", kCommon + kHybrid + " --set plugin.tp_size=2 --set train.batch_size=16 "
                                                                  "--set checkpoint.dir=" + ck("ddp_to_tp2")) == 0);
  BOOST_TEST_REQUIRE(run_vit(2, "ddp_to_pp2", kCommon + kHybrid +
                                                  " --set plugin.pp_size=2 --set plugin.num_microbatches=2 "
                                                  "--set train.batch_size=16 --set checkpoint.dir=" + ck("ddp_to_pp2")) == 0);
  for (const std::string run : {"ddp_to_tp2", "ddp_to_pp2"}) {
    const std::string log = log_of(run);
    BOOST_TEST(contains(log, "the plugin changes from torch_ddp to hybrid_parallel"), log);
    read_only_what_it_holds(run);
    follows_ddp_from_step_7(run);
  }
}

BOOST_AUTO_TEST_CASE(tp2_checkpoint_resumes_into_torch_ddp_on_one_rank) {
  // The tp2 checkpoint at step 6, copied by the first case.
  BOOST_TEST_REQUIRE(fs::exists(ck("tp2_to_ddp1") + "/step_000006/index.json"));
  BOOST_TEST_REQUIRE(run_vit(1, "tp2_to_ddp1", kCommon + " --set train.batch_size=16 --set checkpoint.dir=" +
                                                   ck("tp2_to_ddp1")) == 0);
  const std::string log = log_of("tp2_to_ddp1");
  BOOST_TEST(contains(log, "the plugin changes from hybrid_parallel tp2 pp1 to torch_ddp"), log);
  BOOST_TEST(contains(log, "the layout changes from 2 ranks (dp 1) to 1 rank (dp 1)"), log);
  follows_ddp_from_step_7("tp2_to_ddp1");
}

namespace {

// Every option of the recipe that a plugin carries (RecipeSupport), the weight average among them.
const std::string kRecipe =
    " --set data.mixup_alpha=0.8 --set data.cutmix_alpha=1.0 --set data.mix_prob=0.8 --set train.label_smoothing=0.1"
    " --set model.drop_path=0.2 --set model.hidden_dropout=0.05 --set train.layer_decay=0.8"
    " --set train.no_decay_bias_norm=true --set train.ema_decay=0.9 ";

}  // namespace

BOOST_AUTO_TEST_CASE(exact_resume_with_the_recipe_and_weight_average) {
  for (const Layout& lay : exact_layouts()) {
    if (lay.tag != "tp2" && lay.tag != "pp2dp2z1") continue;
    const std::string tag = "recipe_" + lay.tag;
    BOOST_TEST_CONTEXT(tag) {
      const std::string straight = tag + "_straight";
      BOOST_TEST_REQUIRE(run_vit(lay.ranks, straight, kCommon + kRecipe + lay.args + " --set checkpoint.export_hf=" +
                                                          export_dir(straight)) == 0);
      const std::string cut = kCommon + kRecipe + lay.args + " --set checkpoint.dir=" + ck(tag) +
                              " --set checkpoint.export_hf=" + export_dir(tag);
      BOOST_TEST_REQUIRE(run_vit(lay.ranks, tag, cut + " --set checkpoint.stop_after_steps=6") == 75);
      const json index = json::parse(slurp(ck(tag) + "/step_000006/index.json"));
      BOOST_TEST(index["parts"] == json({"master", "adam_m", "adam_v", "ema"}));
      BOOST_TEST_REQUIRE(run_vit(lay.ranks, tag, cut) == 0);
      BOOST_TEST(manifest(tag)["status"] == "completed");
      same_steps(tag, straight, 1, 12);
      const std::string log = log_of(tag);
      BOOST_TEST(!contains(log, "starts afresh"), log);
      const std::string w = exported(tag);  // the average (no best-model selection here)
      BOOST_TEST(!w.empty());
      BOOST_TEST((w == exported(straight)), tag << ": exported average differs from the straight run's");
    }
  }
}

BOOST_AUTO_TEST_CASE(torch_ddp_weight_average_continues_in_tp2) {
  // As test_resume's torch_ddp -> low_level_zero case: the run ends with a
  // validation that runs the average; had it restarted from the step-6
  // weights it would weigh those 0.9^6 = 0.53 instead of mixing in steps 1
  // to 5, far outside the 1e-5 of a layout change.
  const std::string common = kTiny + " --set train.ema_decay=0.9 --set eval.test_at_end=false --set train.steps=12 "
                                     "--set train.lr=2e-3 ";
  BOOST_TEST_REQUIRE(run_vit(2, "xe_straight", common + " --set train.batch_size=8") == 0);
  BOOST_TEST_REQUIRE(run_vit(2, "xe_cut", common + " --set train.batch_size=8 --set checkpoint.dir=" + ck("xe") +
                                              " --set checkpoint.stop_after_steps=6") == 75);
  BOOST_TEST_REQUIRE(run_vit(2, "xe_tp2", common + kHybrid + " --set plugin.tp_size=2 --set train.batch_size=16 "
                                                             "--set checkpoint.dir=" + ck("xe")) == 0);
  const std::string log = log_of("xe_tp2");
  BOOST_TEST(contains(log, "the plugin changes from torch_ddp to hybrid_parallel"), log);
  BOOST_TEST(!contains(log, "starts afresh"), log);
  same_ema_eval("xe_tp2", "xe_straight");
}
