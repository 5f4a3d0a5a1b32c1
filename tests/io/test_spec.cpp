// The experiment spec: defaults, every error class with its exact message,
// --set overrides on nested fields, cross-field and layout rules, and the
// printers (resolved YAML and --print-spec read back to the same spec).
//
// Messages are compared as whole strings: their shape
// `<where>: <dotted.field>: <what is wrong> (<what is allowed>)` is a
// contract with users (and with scripts that grep for it).
#define BOOST_TEST_MODULE spec
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/spec.h"

using namespace vit;

namespace {

const std::string kData = VIT_SOURCE_DIR "/tests/io/data/";

// The message of the UserError that `f` throws; fails the test if none.
template <typename F>
std::string user_error(F&& f) {
  try {
    f();
  } catch (const UserError& e) {
    return e.what();
  }
  BOOST_FAIL("expected a vit::UserError");
  return "";
}

std::string text_error(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  return user_error([&] { load_spec_text(yaml, "x.yaml", sets); });
}

std::string layout_error(const ExperimentSpec& spec, int world) {
  return user_error([&] { validate_layout(spec, world); });
}

}  // namespace

// ---------------------------------------------------------------------------
// Defaults and the schema
// ---------------------------------------------------------------------------

// Floats compare exactly: the parser (std::from_chars) rounds decimal text to
// the nearest double, exactly as the compiler rounds the same literal.
BOOST_AUTO_TEST_CASE(defaults_are_the_documented_ones) {
  const ExperimentSpec s;
  BOOST_TEST(s.run.name == "vit_run");
  BOOST_TEST(s.run.seed == 42);
  BOOST_TEST(s.run.device == "auto");
  BOOST_TEST(s.run.progress == true);
  BOOST_TEST(s.data.path == "data/beans_224.h5");
  BOOST_TEST(s.data.eval_split == "validation");
  BOOST_TEST(s.data.crop_ratio_max == 1.3333);
  BOOST_TEST(s.data.drop_last == true);
  BOOST_TEST(s.model.hidden == 768);
  BOOST_TEST(s.model.mlp_dim == 3072);
  BOOST_TEST(s.model.layernorm_eps == 1e-12);
  BOOST_TEST(s.model.pretrained == "");
  BOOST_TEST(s.model.attention == "cudnn");
  BOOST_TEST(s.plugin.name == "torch_ddp");
  BOOST_TEST(s.plugin.initial_scale == 65536.0);
  BOOST_TEST(s.plugin.max_scale == 4294967296.0);
  BOOST_TEST(s.plugin.stage == 2);
  BOOST_TEST(s.plugin.zero_stage == 0);
  BOOST_TEST(s.train.epochs == 3);
  BOOST_TEST(s.train.batch_size == 16);
  BOOST_TEST(s.train.lr == 2e-4);
  BOOST_TEST(s.train.lr_scale_with_world == true);
  BOOST_TEST(s.train.warmup_ratio == 0.3);
  BOOST_TEST(s.train.schedule == "cosine");
  BOOST_TEST(s.eval.batch_size == 32);
  BOOST_TEST(s.benchmark.steps == 20);
  BOOST_TEST(s.checkpoint.dir == "");
  BOOST_TEST(s.data.verify_checksum == true);        // issue 9: data is checked unless switched off
  BOOST_TEST(s.checkpoint.overwrite_export == false);  // issue 9: an earlier export is kept unless asked
  BOOST_TEST(s.origin.where.empty());
}

BOOST_AUTO_TEST_CASE(schema_rows_are_distinct_and_documented) {
  const auto& schema = spec_schema();
  // DESIGN.md section 5 as listed in the brief: 76 fields, plus
  // data.verify_checksum and checkpoint.overwrite_export (issue 9),
  // benchmark.profile (issue 14), 6 for checkpoints and faults (issue 11),
  // and the training recipe's 16 (issue 15: data: auto_augment, rand_ops,
  // rand_magnitude, random_erase, mixup_alpha, cutmix_alpha, mix_prob,
  // mix_switch_prob; model: drop_path, hidden_dropout, pretrained_dropout;
  // train: label_smoothing, ema_decay, layer_decay, no_decay_bias_norm; eval:
  // keep_best), plus plugin.cpu_update (issue 12), train.recompute_gelu,
  // model.attention_deterministic, model.attention_backward, plugin.cuda_graph, plugin.gemm_autotune,
  // plugin.gemm_autotune_wide, plugin.gemm_tuning_cache, plugin.reduce_dtype,
  // train.recompute_norm and model.attention_forward (issue 14).
  // A tripwire: a new field must come with its row (and this count).
  BOOST_TEST(schema.size() == 112u);
  std::set<std::string> paths;
  std::set<void*> members;
  ExperimentSpec s;
  for (const FieldInfo& f : schema) {
    BOOST_TEST_CONTEXT(f.path) {
      BOOST_TEST(paths.insert(f.path).second);       // no path twice
      BOOST_TEST(members.insert(f.at(s)).second);    // no member filled by two rows
      BOOST_TEST(std::string(f.meaning).size() > 10u);
      BOOST_TEST(find_field(f.path) == &f);
    }
  }
  const std::vector<std::string> sections = {"run",   "data", "model",     "plugin",
                                             "train", "eval", "benchmark", "checkpoint"};
  BOOST_TEST(spec_sections() == sections, boost::test_tools::per_element());
  BOOST_TEST(find_field("train.nope") == nullptr);
}

BOOST_AUTO_TEST_CASE(empty_file_and_comment_only_file_give_defaults) {
  const nlohmann::json defaults = spec_to_json(ExperimentSpec{});
  BOOST_TEST(spec_to_json(load_spec_text("", "x.yaml", {})) == defaults);
  BOOST_TEST(spec_to_json(load_spec_text("# nothing here\n", "x.yaml", {})) == defaults);
  BOOST_TEST(spec_to_json(load_spec_text("eval:\n", "x.yaml", {})) == defaults);  // an empty section
  BOOST_TEST(spec_to_json(load_spec("", {})) == defaults);                         // no file at all
}

BOOST_AUTO_TEST_CASE(good_file_loads_with_origins) {
  const std::string path = kData + "good.yaml";
  const ExperimentSpec s = load_spec(path, {});
  BOOST_TEST(s.run.name == "tiny_cpu");
  BOOST_TEST(s.run.seed == 7);
  BOOST_TEST(s.data.augment == true);
  BOOST_TEST(s.model.hidden == 64);
  BOOST_TEST(s.train.lr == 1e-3);
  BOOST_TEST(s.eval.batch_size == 8);
  BOOST_TEST(s.train.epochs == 1);
  BOOST_TEST(s.train.weight_decay == 0.05);  // untouched: default
  BOOST_TEST(s.origin.file == path);
  BOOST_TEST(s.origin.locate("model.hidden") == path + ":11");
  BOOST_TEST(s.origin.locate("train.lr") == path + ":20");
  BOOST_TEST(s.origin.locate("train.weight_decay") == path);
}

BOOST_AUTO_TEST_CASE(missing_file_names_the_file) {
  const std::string path = kData + "no_such_spec.yaml";
  BOOST_TEST(user_error([&] { load_spec(path, {}); }) ==
             path + ": cannot open the spec file (No such file or directory)");
}

// Issue 9: a folder given as the spec used to read as an empty file, i.e.
// every default, and ran.
BOOST_AUTO_TEST_CASE(a_folder_is_not_a_spec_file) {
  BOOST_TEST(user_error([&] { load_spec(kData, {}); }) ==
             kData + ": is a folder, not a spec file (give the YAML file, e.g. configs/quickstart.yaml)");
}

// ---------------------------------------------------------------------------
// Error classes, from files
// ---------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(unknown_key_names_the_nearest_field) {
  const std::string path = kData + "unknown_key.yaml";
  BOOST_TEST(user_error([&] { load_spec(path, {}); }) ==
             path + ":7: model.hiden: unknown field (did you mean 'model.hidden'?)");
  // A field written under the wrong section points to its own section.
  BOOST_TEST(text_error("model:\n  lr: 1\n") == "x.yaml:2: model.lr: unknown field (did you mean 'train.lr'?)");
  // Swapped letters count as one edit.
  BOOST_TEST(text_error("train:\n  ecophs: 1\n") ==
             "x.yaml:2: train.ecophs: unknown field (did you mean 'train.epochs'?)");
  // A prefix of a field's name.
  BOOST_TEST(text_error("train:\n  warmup: 0.1\n") ==
             "x.yaml:2: train.warmup: unknown field (did you mean 'train.warmup_ratio'?)");
  // Nothing close: the section's fields are listed.
  BOOST_TEST(text_error("benchmark:\n  zzzzzz: 1\n") ==
             "x.yaml:2: benchmark.zzzzzz: unknown field (allowed in benchmark: enabled, warmup_steps, steps, profile)");
}

BOOST_AUTO_TEST_CASE(unknown_section_names_the_nearest_section_or_field) {
  BOOST_TEST(text_error("trian:\n  lr: 1\n") == "x.yaml:1: trian: unknown section (did you mean 'train'?)");
  BOOST_TEST(text_error("run:\n  seed: 1\nlr: 1\n") == "x.yaml:3: lr: unknown section (did you mean 'train.lr'?)");
  BOOST_TEST(text_error("optimizer:\n  lr: 1\n") ==
             "x.yaml:1: optimizer: unknown section (allowed: run, data, model, plugin, train, eval, benchmark, "
             "checkpoint)");
}

BOOST_AUTO_TEST_CASE(wrong_type_names_what_was_found) {
  const std::string path = kData + "wrong_type.yaml";
  BOOST_TEST(user_error([&] { load_spec(path, {}); }) == path + ":4: train.lr: expected a number, got 'fast'");
  BOOST_TEST(text_error("train:\n  batch_size: 16.5\n") ==
             "x.yaml:2: train.batch_size: expected an integer, got '16.5'");
  BOOST_TEST(text_error("run:\n  progress: maybe\n") == "x.yaml:2: run.progress: expected true or false, got 'maybe'");
  BOOST_TEST(text_error("train:\n  lr: {a: 1}\n") == "x.yaml:2: train.lr: expected a number, got a mapping");
  BOOST_TEST(text_error("train:\n  epochs: [1, 2]\n") ==
             "x.yaml:2: train.epochs: expected an integer, got a sequence");
  // `lr:` with nothing after it: the key's line, not the next one.
  BOOST_TEST(text_error("train:\n  lr:\n  epochs: 1\n") == "x.yaml:2: train.lr: expected a number, got nothing");
  BOOST_TEST(text_error("train:\n  lr: .inf\n") == "x.yaml:2: train.lr: expected a number, got '.inf'");
  BOOST_TEST(text_error("model:\n  pretrained: [a]\n") ==
             "x.yaml:2: model.pretrained: expected a string, got a sequence");
  BOOST_TEST(text_error("train: 5\n") ==
             "x.yaml:1: train: expected a mapping of train fields, got '5' (allowed: epochs, steps, batch_size, "
             "grad_accum, lr, lr_scale_with_world, weight_decay, beta1, beta2, eps, warmup_ratio, schedule, "
             "grad_clip, recompute, recompute_gelu, recompute_norm, max_nonfinite_steps, label_smoothing, ema_decay, layer_decay, "
             "no_decay_bias_norm)");
  BOOST_TEST(text_error("- run\n- train\n") ==
             "x.yaml:1: expected a mapping of sections, got a sequence (allowed: run, data, model, plugin, train, "
             "eval, benchmark, checkpoint)");
}

BOOST_AUTO_TEST_CASE(out_of_range_names_the_allowed_range) {
  const std::string path = kData + "out_of_range.yaml";
  BOOST_TEST(user_error([&] { load_spec(path, {}); }) == path + ":5: train.lr: -1 is out of range (allowed: > 0)");
  BOOST_TEST(text_error("train:\n  beta2: 1\n") == "x.yaml:2: train.beta2: 1 is out of range (allowed: [0, 1))");
  BOOST_TEST(text_error("plugin:\n  stage: 3\n") == "x.yaml:2: plugin.stage: 3 is out of range (allowed: 1 to 2)");
  BOOST_TEST(text_error("data:\n  crop_scale_min: 0\n") ==
             "x.yaml:2: data.crop_scale_min: 0 is out of range (allowed: (0, 1])");
  BOOST_TEST(text_error("model:\n  depth: 0\n") == "x.yaml:2: model.depth: 0 is out of range (allowed: >= 1)");
  BOOST_TEST(text_error("train:\n  epochs: 99999999999\n") ==
             "x.yaml:2: train.epochs: 99999999999 is out of range (allowed: >= 0, at most 2147483647)");
}

BOOST_AUTO_TEST_CASE(bad_choice_lists_the_choices) {
  const std::string path = kData + "bad_choice.yaml";
  BOOST_TEST(user_error([&] { load_spec(path, {}); }) ==
             path + ":3: plugin.name: 'ddp' is not allowed (allowed: torch_ddp, torch_ddp_fp16, low_level_zero, "
                    "gemini, hybrid_parallel)");
  BOOST_TEST(text_error("run:\n  name: a/b\n") ==
             "x.yaml:2: run.name: 'a/b' is not allowed (allowed: one or more letters, digits, '.', '_', '-')");
}

BOOST_AUTO_TEST_CASE(yaml_syntax_error_names_the_line) {
  const std::string path = kData + "syntax_error.yaml";
  BOOST_TEST(user_error([&] { load_spec(path, {}); }) ==
             path + ":4: YAML syntax error: end of sequence flow not found (at column 9)");
  BOOST_TEST(text_error("train:\n  lr: 1\n bad: 2\n") ==
             "x.yaml:3: YAML syntax error: end of map not found (at column 2)");
}

// Issue 9: yaml-cpp says "illegal map value" or "illegal tab when looking for
// indentation"; the user is told where the tab is. A tab after a key's colon
// is legal YAML and still loads.
BOOST_AUTO_TEST_CASE(a_tab_in_the_indentation_is_named) {
  const std::string tab = "x.yaml:2:1: a tab in the indentation (YAML indents with spaces only: replace the tab with "
                          "spaces)";
  BOOST_TEST(text_error("train:\n\tlr: 0.1\n") == tab);
  BOOST_TEST(text_error("train:\n  lr: 0.1\n  \tepochs: 2\n") ==
             "x.yaml:3:3: a tab in the indentation (YAML indents with spaces only: replace the tab with spaces)");
  BOOST_TEST(load_spec_text("train:\n  lr:\t0.1\n", "x.yaml", {}).train.lr == 0.1);
  // A syntax error without a tab keeps yaml-cpp's words.
  BOOST_TEST(text_error("train:\n  lr: 1\n bad: 2\n") ==
             "x.yaml:3: YAML syntax error: end of map not found (at column 2)");
}

BOOST_AUTO_TEST_CASE(duplicates_and_second_documents_are_refused) {
  BOOST_TEST(text_error("train:\n  lr: 1\n  lr: 2\n") ==
             "x.yaml:3: train.lr: set twice (first at line 2; allowed: once)");
  BOOST_TEST(text_error("train:\n  lr: 1\nrun:\n  seed: 1\ntrain:\n  epochs: 2\n") ==
             "x.yaml:5: train: section written twice (first at line 1; allowed: once, with all its fields)");
  BOOST_TEST(text_error("train:\n  lr: 1\n---\ntrain:\n  lr: 2\n") ==
             "x.yaml:4: a second YAML document (allowed: one document per spec file)");
}

BOOST_AUTO_TEST_CASE(every_problem_is_reported_one_per_line_in_file_order) {
  const std::string p = kData + "many_errors.yaml";
  const std::string expected =
      p + ":3: run.nmae: unknown field (did you mean 'run.name'?)\n" +
      p + ":5: model.hidden: expected an integer, got 'lots'\n" +
      p + ":6: model.depth: 0 is out of range (allowed: >= 1)\n" +
      p + ":8: plugin.name: 'zero' is not allowed (allowed: torch_ddp, torch_ddp_fp16, low_level_zero, gemini, "
          "hybrid_parallel)\n" +
      p + ":9: trian: unknown section (did you mean 'train'?)\n" +
      "--set train.lr=abc: train.lr: expected a number, got 'abc'";
  BOOST_TEST(user_error([&] { load_spec(p, {"train.lr=abc"}); }) == expected);
}

// ---------------------------------------------------------------------------
// --set
// ---------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(set_overrides_nested_fields_of_every_type) {
  const std::string path = kData + "good.yaml";
  const ExperimentSpec s = load_spec(path, {
                                               "model.hidden=96",            // int, in the file
                                               "plugin.growth_factor=4",     // float written as an int, absent
                                               "train.lr=3e-4",              // float, in the file
                                               "plugin.tf32=false",          // bool, absent
                                               "eval.test_at_end=no",        // bool spelled no
                                               "run.output_dir=/tmp/a b:c",  // string with ':' and ' '
                                               "model.pretrained=",          // empty string
                                               "train.schedule=linear",      // choice, absent
                                               "train.epochs=5",
                                               "train.epochs=6",             // later wins
                                               "model.heads=6",              // keeps hidden % heads == 0
                                           });
  BOOST_TEST(s.model.hidden == 96);
  BOOST_TEST(s.model.heads == 6);
  BOOST_TEST(s.plugin.growth_factor == 4.0);
  BOOST_TEST(s.train.lr == 3e-4);
  BOOST_TEST(s.plugin.tf32 == false);
  BOOST_TEST(s.eval.test_at_end == false);
  BOOST_TEST(s.run.output_dir == "/tmp/a b:c");
  BOOST_TEST(s.model.pretrained == "");
  BOOST_TEST(s.train.schedule == "linear");
  BOOST_TEST(s.train.epochs == 6);
  BOOST_TEST(s.run.name == "tiny_cpu");  // from the file, not overridden
  BOOST_TEST(s.origin.locate("train.lr") == "--set train.lr=3e-4");
  BOOST_TEST(s.origin.locate("train.epochs") == "--set train.epochs=6");
  BOOST_TEST(s.origin.locate("run.name") == path + ":3");
}

BOOST_AUTO_TEST_CASE(set_errors_name_the_override) {
  BOOST_TEST(text_error("", {"train.lr=abc"}) == "--set train.lr=abc: train.lr: expected a number, got 'abc'");
  BOOST_TEST(text_error("", {"model.hiden=5"}) ==
             "--set model.hiden=5: model.hiden: unknown field (did you mean 'model.hidden'?)");
  BOOST_TEST(text_error("", {"modle.hidden=5"}) ==
             "--set modle.hidden=5: modle.hidden: unknown field (did you mean 'model.hidden'?)");
  BOOST_TEST(text_error("", {"lr=1"}) == "--set lr=1: lr: unknown section (did you mean 'train.lr'?)");
  BOOST_TEST(text_error("", {"eval=1"}) ==
             "--set eval=1: eval: a section, not a field (allowed: enabled, every_epochs, batch_size, test_at_end, "
             "keep_best)");
  BOOST_TEST(text_error("", {"train.lr"}) ==
             "--set train.lr: train.lr: expected section.field=value (allowed: e.g. --set train.lr=1e-4)");
  BOOST_TEST(text_error("", {"plugin.tf32=maybe"}) ==
             "--set plugin.tf32=maybe: plugin.tf32: expected true or false, got 'maybe'");
  BOOST_TEST(text_error("", {"train.batch_size="}) ==
             "--set train.batch_size=: train.batch_size: expected an integer, got ''");
  BOOST_TEST(text_error("", {"plugin.precision=fp8"}) ==
             "--set plugin.precision=fp8: plugin.precision: 'fp8' is not allowed (allowed: fp32, bf16, fp16)");
}

// ---------------------------------------------------------------------------
// Cross-field rules and layouts
// ---------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(cross_field_rules_name_the_field_and_its_line) {
  // From the file: the field's line.
  BOOST_TEST(text_error("model:\n  hidden: 64\n  heads: 5\n") ==
             "x.yaml:3: model.heads: 5 does not divide model.hidden 64 (allowed: a divisor of model.hidden)");
  // A default left untouched: the file without a line.
  BOOST_TEST(text_error("model:\n  image_size: 30\n") ==
             "x.yaml: model.patch_size: 16 does not divide model.image_size 30 (allowed: a divisor of "
             "model.image_size)");
  // From --set: the override.
  BOOST_TEST(text_error("", {"plugin.precision=fp16"}) ==
             "--set plugin.precision=fp16: plugin.precision: fp16 needs mixed precision, which torch_ddp does not do "
             "(allowed: fp32 with torch_ddp; use torch_ddp_fp16 for fp16)");
  BOOST_TEST(text_error("plugin:\n  name: torch_ddp_fp16\n") ==
             "x.yaml: plugin.precision: fp32 with torch_ddp_fp16 (allowed: fp16 or bf16; use torch_ddp for fp32)");
  BOOST_TEST(text_error("plugin:\n  name: gemini\n  tp_size: 2\n") ==
             "x.yaml:3: plugin.tp_size: 2 needs plugin.name hybrid_parallel, not gemini (allowed: 1 with gemini)");
  BOOST_TEST(text_error("plugin:\n  offload_optim_frac: 0.5\n") ==
             "x.yaml:2: plugin.offload_optim_frac: 0.5 needs plugin.name gemini, not torch_ddp (allowed: 0 with "
             "torch_ddp)");
  BOOST_TEST(text_error("plugin:\n  cpu_update: overlap\n") ==
             "x.yaml:2: plugin.cpu_update: overlap needs plugin.name gemini, not torch_ddp (allowed: auto with "
             "torch_ddp)");
  BOOST_TEST(text_error("plugin:\n  name: gemini\n  reduce_dtype: bf16\n") ==
             "x.yaml:3: plugin.reduce_dtype: bf16 with plugin.name gemini, whose chunks are reduced in fp32 "
             "(allowed: fp32 with gemini; bf16 with torch_ddp, torch_ddp_fp16, low_level_zero or hybrid_parallel)");
  BOOST_TEST(text_error("plugin:\n  reduce_dtype: fp16\n").find("plugin.reduce_dtype") != std::string::npos);
  BOOST_TEST(text_error("plugin:\n  name: gemini\n  offload_optim_frac: 0.5\n  offload_param_frac: 1\n") ==
             "x.yaml:4: plugin.offload_param_frac: 1.0 is above plugin.offload_optim_frac 0.5 (allowed: at most "
             "plugin.offload_optim_frac; offloaded parameters are updated on the host)");
  BOOST_TEST(text_error("plugin:\n  name: hybrid_parallel\n  num_microbatches: 2\n") ==
             "x.yaml:3: plugin.num_microbatches: 2 micro-batches need pipeline stages (allowed: 1 unless "
             "plugin.name is hybrid_parallel with plugin.pp_size > 1)");
  BOOST_TEST(text_error("checkpoint:\n  resume: true\n") ==
             "x.yaml:2: checkpoint.resume: true needs checkpoint.dir (allowed: auto or false when checkpoint.dir is empty)");
  BOOST_TEST(text_error("data:\n  crop_ratio_min: 2\n") ==
             "x.yaml: data.crop_ratio_max: 1.3333 is below data.crop_ratio_min 2.0 (allowed: >= "
             "data.crop_ratio_min)");
  BOOST_TEST(text_error("plugin:\n  initial_scale: 0.5\n") ==
             "x.yaml:2: plugin.initial_scale: 0.5 is outside [plugin.min_scale, plugin.max_scale] (allowed: 1.0 "
             "to 4294967296.0)");
  // Issue 9: the CPU computes in fp32 only; known from the spec when run.device says cpu.
  BOOST_TEST(text_error("run:\n  device: cpu\nplugin:\n  name: torch_ddp_fp16\n  precision: bf16\n") ==
             "x.yaml:5: plugin.precision: bf16 needs a GPU, but run.device is cpu (allowed on the CPU: fp32, with "
             "plugin.name torch_ddp)");
  // The training recipe's rules.
  BOOST_TEST(text_error("eval:\n  enabled: false\n  keep_best: true\n") ==
             "x.yaml:3: eval.keep_best: true needs the validation of eval.enabled (allowed: false when "
             "eval.enabled is false)");
  BOOST_TEST(text_error("model:\n  pretrained_dropout: true\n") ==
             "x.yaml:2: model.pretrained_dropout: true needs model.pretrained (allowed: false without a pretrained "
             "checkpoint)");
  BOOST_TEST(text_error("model:\n  pretrained: /x\n  pretrained_dropout: true\n  hidden_dropout: 0.1\n") ==
             "x.yaml:4: model.hidden_dropout: 0.1 and model.pretrained_dropout both set the dropout (allowed: 0 "
             "when model.pretrained_dropout is true)");
  BOOST_TEST(text_error("model:\n  drop_path: 1.0\n") ==
             "x.yaml:2: model.drop_path: 1.0 is out of range (allowed: [0, 1))");
  BOOST_TEST(text_error("data:\n  auto_augment: wide\n").find("data.auto_augment") != std::string::npos);
  // Both model problems at once, one line each.
  BOOST_TEST(text_error("model:\n  hidden: 64\n  heads: 5\n  patch_size: 15\n") ==
             "x.yaml:3: model.heads: 5 does not divide model.hidden 64 (allowed: a divisor of model.hidden)\n"
             "x.yaml:4: model.patch_size: 15 does not divide model.image_size 224 (allowed: a divisor of "
             "model.image_size)");
}

BOOST_AUTO_TEST_CASE(layout_impossible_for_the_world_size) {
  const std::string path = kData + "tp2.yaml";
  const ExperimentSpec s = load_spec(path, {});
  validate_layout(s, 2);
  validate_layout(s, 4);
  BOOST_TEST(layout_error(s, 3) ==
             path + ":11: plugin.tp_size: tp_size 2 x pp_size 1 = 2 does not divide the world size 3 (allowed: a "
                    "number of ranks that is a multiple of 2)");
  // Pipeline: the default pp_size line is blamed when tp_size is 1.
  const ExperimentSpec pp = load_spec(path, {"plugin.tp_size=1", "plugin.pp_size=2"});
  BOOST_TEST(layout_error(pp, 3) ==
             "--set plugin.pp_size=2: plugin.pp_size: tp_size 1 x pp_size 2 = 2 does not divide the world size 3 "
             "(allowed: a number of ranks that is a multiple of 2)");
  // Rules that need no world size already stop load_spec.
  BOOST_TEST(user_error([&] { load_spec(path, {"plugin.tp_size=3"}); }) ==
             "--set plugin.tp_size=3: plugin.tp_size: 3 does not divide model.heads 4 (allowed: a divisor of "
             "model.heads)\n"
             "--set plugin.tp_size=3: plugin.tp_size: 3 does not divide model.mlp_dim 128 (allowed: a divisor of "
             "model.mlp_dim)");
  BOOST_TEST(user_error([&] { load_spec(path, {"plugin.pp_size=4"}); }) ==
             "--set plugin.pp_size=4: plugin.pp_size: 4 does not divide model.depth 2 (allowed: a divisor of "
             "model.depth, so every stage holds as many blocks)");
  BOOST_TEST(user_error([&] { load_spec(path, {"plugin.pp_size=2", "plugin.num_microbatches=3"}); }) ==
             "--set plugin.num_microbatches=3: plugin.num_microbatches: 3 does not divide train.batch_size 4 "
             "(allowed: a divisor of train.batch_size)");
  // A spec built in code (no file) still gets a location.
  ExperimentSpec code;
  code.plugin.name = "hybrid_parallel";
  code.plugin.tp_size = 4;
  BOOST_TEST(layout_error(code, 6) ==
             "<defaults>: plugin.tp_size: tp_size 4 x pp_size 1 = 4 does not divide the world size 6 (allowed: a "
             "number of ranks that is a multiple of 4)");
  validate_layout(ExperimentSpec{}, 7);  // data parallel fits any world
}

// ---------------------------------------------------------------------------
// Printers
// ---------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(resolved_yaml_round_trips_every_field) {
  // Change every field away from its default where the type allows, so the
  // round trip cannot pass by falling back on defaults.
  ExperimentSpec s = load_spec(kData + "tp2.yaml",
                               {"run.name=rt.run-1", "run.output_dir=out dir/#x: \"q\" \\", "run.seed=0",
                                "data.crop_ratio_max=1.25", "model.layernorm_eps=1e-6", "train.lr=2.5e-05",
                                "plugin.max_scale=1e9", "plugin.precision=bf16", "train.recompute=yes", "train.recompute_gelu=true", "train.recompute_norm=true", "model.attention_deterministic=false",
                                "model.attention_backward=cudnn", "model.attention_forward=cudnn",
                                "plugin.cuda_graph=false",
                                "checkpoint.dir=ckpt", "checkpoint.resume=true"});
  const std::string yaml = resolved_yaml(s);
  const ExperimentSpec back = load_spec_text(yaml, "resolved.yaml", {});
  BOOST_TEST(spec_to_json(back).dump() == spec_to_json(s).dump());
  BOOST_TEST(back.run.output_dir == "out dir/#x: \"q\" \\");
  // Every field is written, and each value that was set says where from.
  for (const FieldInfo& f : spec_schema()) {
    BOOST_TEST_CONTEXT(f.path) { BOOST_TEST(back.origin.where.count(f.path) == 1u); }
  }
  // Origin comments start at column 41.
  auto commented = [](const std::string& line, const std::string& origin) {
    return line + std::string(40 - line.size(), ' ') + "# " + origin + "\n";
  };
  BOOST_TEST(yaml.find(commented("  lr: 2.5e-05", "--set train.lr=2.5e-05")) != std::string::npos);
  BOOST_TEST(yaml.find(commented("  tp_size: 2", kData + "tp2.yaml:11")) != std::string::npos);
  BOOST_TEST(yaml.find(commented("  max_scale: 1e+09", "--set plugin.max_scale=1e9")) != std::string::npos);
  BOOST_TEST(yaml.find("  weight_decay: 0.05\n") != std::string::npos);  // a default: no comment
}

BOOST_AUTO_TEST_CASE(print_schema_documents_every_field_and_loads_as_the_defaults) {
  const std::string schema = print_schema();
  for (const FieldInfo& f : spec_schema()) {
    BOOST_TEST_CONTEXT(f.path) { BOOST_TEST(schema.find(f.meaning) != std::string::npos); }
  }
  BOOST_TEST(schema.find("  # float, > 0. Peak learning rate (before lr_scale_with_world).\n  lr: 0.0002\n") !=
             std::string::npos);
  BOOST_TEST(schema.find("  # choice: fp32 | bf16 | fp16. ") != std::string::npos);
  BOOST_TEST(schema.find("  # int, 1 to 2. low_level_zero") != std::string::npos);
  BOOST_TEST(schema.find("  pretrained: \"\"\n") != std::string::npos);
  BOOST_TEST(schema.find("  max_scale: 4294967296.0\n") != std::string::npos);
  BOOST_TEST(schema.find("  layernorm_eps: 1e-12\n") != std::string::npos);
  const ExperimentSpec loaded = load_spec_text(schema, "schema.yaml", {});
  BOOST_TEST(spec_to_json(loaded) == spec_to_json(ExperimentSpec{}));
}

BOOST_AUTO_TEST_CASE(spec_to_json_has_typed_values_per_section) {
  const nlohmann::json j = spec_to_json(load_spec(kData + "good.yaml", {}));
  BOOST_TEST(j.size() == 8u);
  BOOST_TEST(j.at("run").at("name").get<std::string>() == "tiny_cpu");
  BOOST_TEST(j.at("model").at("hidden").is_number_integer());
  BOOST_TEST(j.at("model").at("hidden").get<int>() == 64);
  BOOST_TEST(j.at("train").at("lr").is_number_float());
  BOOST_TEST(j.at("train").at("lr").get<double>() == 1e-3);
  BOOST_TEST(j.at("plugin").at("tf32").is_boolean());
  BOOST_TEST(j.at("checkpoint").at("dir").get<std::string>() == "");
  size_t fields = 0;
  for (const auto& section : j) fields += section.size();
  BOOST_TEST(fields == spec_schema().size());
}
