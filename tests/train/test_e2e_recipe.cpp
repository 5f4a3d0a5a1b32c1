// The training recipe end to end: vit_hpc through mpirun on the Beans images
// (64 px, a small ViT so that each run takes seconds).
//   - Every recipe option at once gives the same loss and gradient-norm
//     curves on 1 rank, on 2 ranks, with low_level_zero stage 2 on 2 ranks
//     and with gemini on 2 ranks (optimizer states on the device, and all
//     of them and the parameters offloaded: the CPU AdamW with per-parameter
//     lr and decay, and the average of host parts) (augmentation, mixing
//     partners and drop-path/dropout masks follow the global image position,
//     not the rank); hybrid_parallel tp2 and pp2 follow one rank's curves
//     with every option too.
//   - Best-model selection keeps the right weights: with a constant lr (so a
//     shorter run is a prefix of a longer one) the "best" test of a 3-epoch
//     run equals, bit for bit, the final test of a run stopped at the best
//     validation epoch; the metrics say which weights each evaluation ran.
#define BOOST_TEST_MODULE e2e_recipe
#include <boost/test/unit_test.hpp>

#include "e2e_util.h"
#include "parallel/plugin.h"

using namespace e2e;

namespace {

const std::string kSmall =
    " --set model.hidden=48 --set model.depth=3 --set model.heads=3 --set model.mlp_dim=96";
const std::string kRecipe =
    " --set data.auto_augment=trivial --set data.random_erase=0.25 --set data.mixup_alpha=0.8"
    " --set data.cutmix_alpha=1.0 --set data.mix_prob=0.8 --set train.label_smoothing=0.1 --set model.drop_path=0.2"
    " --set model.hidden_dropout=0.05 --set train.ema_decay=0.9 --set train.layer_decay=0.8"
    " --set train.no_decay_bias_norm=true";

std::vector<json> evals(const std::string& run) {
  return of_type(read_jsonl(scratch() + "/" + run + "/rank_0.jsonl"), "eval");
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_option_follows_the_same_curves_on_any_rank_count) {
  const std::string common = kSmall + kRecipe + " --set train.steps=5 --set eval.enabled=false --set train.lr=2e-3";
  BOOST_TEST_REQUIRE(vit_hpc(1, "recipe_np1", common + " --set train.batch_size=16") == 0);
  BOOST_TEST_REQUIRE(vit_hpc(2, "recipe_np2", common + " --set train.batch_size=8") == 0);
  BOOST_TEST_REQUIRE(vit_hpc(2, "recipe_zero2", common + " --set train.batch_size=8 --set plugin.name=low_level_zero") ==
                     0);
  const std::string gemini = " --set train.batch_size=8 --set plugin.name=gemini --set plugin.chunk_size_mb=1";
  BOOST_TEST_REQUIRE(vit_hpc(2, "recipe_gemini", common + gemini) == 0);
  BOOST_TEST_REQUIRE(vit_hpc(2, "recipe_gemini_offload",
                             common + gemini + " --set plugin.offload_optim_frac=1 --set plugin.offload_param_frac=1") ==
                     0);
  BOOST_TEST_REQUIRE(vit_hpc(1, "plain_np1", kSmall + " --set train.steps=5 --set eval.enabled=false --set train.lr=2e-3"
                                             " --set train.batch_size=16") == 0);
  const auto l1 = step_losses("recipe_np1"), l2 = step_losses("recipe_np2"), lz = step_losses("recipe_zero2");
  const auto g1 = step_grad_norms("recipe_np1"), g2 = step_grad_norms("recipe_np2"), gz = step_grad_norms("recipe_zero2");
  const auto plain = step_losses("plain_np1");
  const auto lg = step_losses("recipe_gemini"), lo = step_losses("recipe_gemini_offload");
  const auto gg = step_grad_norms("recipe_gemini"), go = step_grad_norms("recipe_gemini_offload");
  BOOST_TEST_REQUIRE(lg.size() == 5u);
  BOOST_TEST_REQUIRE(lo.size() == 5u);
  BOOST_TEST_REQUIRE(l1.size() == 5u);
  // As test_e2e's rank-count check: only the order of fp32 sums differs, 1e-5.
  for (size_t i = 0; i < l1.size(); ++i) {
    BOOST_TEST_CONTEXT("step " << i + 1) {
      BOOST_TEST(l2[i] == l1[i], boost::test_tools::tolerance(1e-5));
      BOOST_TEST(lz[i] == l1[i], boost::test_tools::tolerance(1e-5));
      BOOST_TEST(g2[i] == g1[i], boost::test_tools::tolerance(1e-5));
      BOOST_TEST(gz[i] == g1[i], boost::test_tools::tolerance(1e-5));
      // gemini: as test_e2e's gemini vs torch_ddp case, 1e-5 relative (the
      // order of fp32 sums: per-chunk reduce-scatters, the host's norm share).
      BOOST_TEST(lg[i] == l1[i], boost::test_tools::tolerance(1e-5));
      BOOST_TEST(lo[i] == l1[i], boost::test_tools::tolerance(1e-5));
      BOOST_TEST(gg[i] == g1[i], boost::test_tools::tolerance(1e-5));
      BOOST_TEST(go[i] == g1[i], boost::test_tools::tolerance(1e-5));
      BOOST_TEST(std::abs(l1[i] - plain[i]) > 1e-4);  // the recipe changed the training
    }
  }
}

BOOST_AUTO_TEST_CASE(hybrid_parallel_follows_one_ranks_curves_with_every_option) {
  // tp2 and pp2 (2 pipeline micro-batches) on 2 ranks against 1 torch_ddp
  // rank, global batch 16, every recipe option (the same loader, masks keyed
  // by the global image position; test_recipe_hybrid checks gradients and
  // ZeRO-1 layouts op by op). A model both layouts can split: 4 heads, 2 blocks.
  const std::string model = " --set model.hidden=48 --set model.depth=2 --set model.heads=4 --set model.mlp_dim=96";
  const std::string common = model + kRecipe +
                             " --set train.steps=5 --set eval.enabled=false --set train.lr=2e-3 --set train.batch_size=16";
  const std::string hybrid = " --set plugin.name=hybrid_parallel";
  BOOST_TEST_REQUIRE(vit_hpc(1, "hybrid_ref_np1", common) == 0);
  BOOST_TEST_REQUIRE(vit_hpc(2, "hybrid_tp2", common + hybrid + " --set plugin.tp_size=2") == 0);
  BOOST_TEST_REQUIRE(vit_hpc(2, "hybrid_pp2", common + hybrid + " --set plugin.pp_size=2 --set plugin.num_microbatches=2") ==
                     0);
  const auto l1 = step_losses("hybrid_ref_np1"), g1 = step_grad_norms("hybrid_ref_np1");
  BOOST_TEST_REQUIRE(l1.size() == 5u);
  for (const std::string run : {"hybrid_tp2", "hybrid_pp2"}) {
    const auto l = step_losses(run), g = step_grad_norms(run);
    BOOST_TEST_REQUIRE(l.size() == l1.size());
    // As above: only the order of fp32 sums differs, 1e-5.
    for (size_t i = 0; i < l1.size(); ++i) {
      BOOST_TEST_CONTEXT(run << " step " << i + 1) {
        BOOST_TEST(l[i] == l1[i], boost::test_tools::tolerance(1e-5));
        BOOST_TEST(g[i] == g1[i], boost::test_tools::tolerance(1e-5));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(best_model_selection_keeps_the_best_epochs_weights) {
  const std::string common = kSmall + kRecipe +
                             " --set train.schedule=constant --set train.warmup_ratio=0 --set train.lr=3e-3"
                             " --set train.batch_size=32 --set eval.keep_best=true --set eval.every_epochs=1";
  BOOST_TEST_REQUIRE(vit_hpc(2, "best3", common + " --set train.epochs=3 --set checkpoint.export_hf=" + scratch() +
                                             "/best3_hf") == 0);
  const auto e3 = evals("best3");
  int best_epoch = 0;
  double best_acc = -1, best_test = -1, last_test = -1;
  int n_val = 0;
  for (const auto& e : e3) {
    if (e.at("split") == "validation") {
      ++n_val;
      BOOST_TEST(e.at("weights") == "ema");  // evaluations run the weight average
      if (e.at("accuracy").get<double>() > best_acc) {  // ties keep the earlier epoch
        best_acc = e.at("accuracy").get<double>();
        best_epoch = e.at("epoch").get<int>();
      }
    } else if (e.at("weights") == "best") {
      BOOST_TEST(e.at("epoch").get<int>() == best_epoch);
      best_test = e.at("loss").get<double>();
    } else {
      BOOST_TEST(e.at("weights") == "ema");
      BOOST_TEST(e.at("epoch").get<int>() == 3);
      last_test = e.at("loss").get<double>();
    }
  }
  BOOST_TEST(n_val == 3);
  BOOST_TEST_REQUIRE(best_test >= 0);
  BOOST_TEST_REQUIRE(last_test >= 0);
  BOOST_TEST(fs::exists(scratch() + "/best3_hf/model.safetensors"));
  // The same run stopped at the best epoch: its final weights (average) are
  // the kept ones, so its test loss is the "best" one, bit for bit.
  BOOST_TEST_REQUIRE(vit_hpc(2, "best_prefix", common + " --set train.epochs=" + std::to_string(best_epoch)) == 0);
  double prefix_test = -1;
  for (const auto& e : evals("best_prefix")) {
    if (e.at("split") == "test" && e.at("weights") == "ema") prefix_test = e.at("loss").get<double>();
  }
  BOOST_TEST(prefix_test == best_test);
  // Without the average the evaluations say "last".
  BOOST_TEST_REQUIRE(vit_hpc(1, "plain_weights", kSmall + " --set train.steps=3 --set train.ema_decay=0") == 0);
  for (const auto& e : evals("plain_weights")) BOOST_TEST(e.at("weights") == "last");
}

BOOST_AUTO_TEST_CASE(plugins_without_the_recipe_refuse_it_before_any_work_in_check_and_run) {
  // One option of each recipe group, in the order the trainer names them.
  // Whatever the registry says a plugin does not carry, `--check` and the
  // run itself refuse with exit status 2 on every rank, one message naming
  // the fields and the overrides that turn them off, before training (no
  // results folder); with those overrides the spec is accepted. The
  // registry is the source, so the test follows plugins as they gain
  // options; a plugin that carries all of them is checked to accept them.
  struct Option {
    bool vit::parallel::RecipeSupport::*group;
    std::string field, on, off;
  };
  const std::vector<Option> options = {{&vit::parallel::RecipeSupport::train_extras, "model.drop_path", "0.1", "0"},
                                       {&vit::parallel::RecipeSupport::param_groups, "train.layer_decay", "0.8", "1"},
                                       {&vit::parallel::RecipeSupport::ema, "train.ema_decay", "0.9", "0"}};
  std::string all_on;
  for (const Option& o : options) all_on += " --set " + o.field + "=" + o.on;
  int refusing = 0;
  for (const vit::parallel::PluginEntry& e : vit::parallel::plugin_registry()) {
    if (e.make == nullptr) continue;
    const std::string plugin = e.name;
    std::string fields, sets;
    for (const Option& o : options) {
      if (e.recipe.*o.group) continue;
      fields += (fields.empty() ? "" : ", ") + o.field;
      sets += " --set " + o.field + "=" + o.off;
    }
    if (fields.empty()) {  // carries all of them: accepted (torch_ddp_fp16 needs a GPU for bf16/fp16)
      if (plugin != "torch_ddp_fp16") {
        BOOST_TEST(vit_hpc(2, "accept_all_" + plugin, "--set plugin.name=" + plugin + kSmall + all_on + " --check") == 0);
      }
      continue;
    }
    ++refusing;
    const bool several = fields.find(',') != std::string::npos;
    for (const bool check : {true, false}) {
      const std::string name = "refuse_" + plugin + (check ? "_check" : "_run");
      BOOST_TEST(vit_hpc(2, name, "--set plugin.name=" + plugin + kSmall + all_on + (check ? " --check" : "")) == 2);
      const std::string log = slurp(scratch() + "/" + name + ".log");
      const std::string want =
          fields + ": plugin " + plugin + " does not carry " + (several ? "these options" : "this option");
      size_t count = 0;
      for (size_t at = log.find(want); at != std::string::npos; at = log.find(want, at + 1)) ++count;
      BOOST_TEST(count == 1u, name << ": the refusal appears " << count << " times:\n" << log);
      BOOST_TEST(log.find(sets) != std::string::npos, log);
      BOOST_TEST(!fs::exists(scratch() + "/" + name + "/manifest.json"), name << " started a run");
    }
    BOOST_TEST(vit_hpc(2, "accept_" + plugin, "--set plugin.name=" + plugin + kSmall + all_on + sets + " --check") == 0);
  }
  BOOST_TEST_MESSAGE(refusing << " plugin(s) of this build refuse part of the recipe");
}
