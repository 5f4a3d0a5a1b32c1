#include "parallel/plugin.h"

#include <algorithm>

#include "core/error.h"
#include "parallel/data_parallel.h"
#include "parallel/gemini.h"
#include "parallel/hybrid_parallel.h"

namespace vit::parallel {

const char* state_part_name(StatePart part) {
  switch (part) {
    case StatePart::Master: return "master";
    case StatePart::AdamM: return "adam_m";
    case StatePart::AdamV: return "adam_v";
    case StatePart::Ema: return "ema";
  }
  VIT_THROW("unknown StatePart ", static_cast<int>(part));
}

namespace {
[[noreturn]] void no_checkpoints(const Plugin& p) {
  throw UserError(str_cat("checkpoints are not supported by ", p.name(),
                          " yet (checkpoint.dir needs a plugin that exports its training state: torch_ddp, "
                          "torch_ddp_fp16, low_level_zero, gemini, hybrid_parallel); pick one of those with "
                          "plugin.name, or leave checkpoint.dir unset to train without checkpoints"));
}
}  // namespace

std::vector<TensorRun> Plugin::state_runs() const { no_checkpoints(*this); }
std::vector<float> Plugin::export_state(StatePart) { no_checkpoints(*this); }
std::vector<StatePart> Plugin::state_parts() const { no_checkpoints(*this); }

std::vector<StatePart> state_parts_with(bool ema) {
  std::vector<StatePart> parts(std::begin(kStateParts), std::end(kStateParts));
  if (ema) parts.push_back(StatePart::Ema);
  return parts;
}
void Plugin::import_state(const StateReader&, bool) { no_checkpoints(*this); }

const std::vector<PluginEntry>& plugin_registry() {
  // Mixup/cutmix, drop path and dropout (train_extras), per-parameter lr and
  // decay (param_groups) and the weight average (ema).
  constexpr RecipeSupport kAll{true, true, true};
  static const std::vector<PluginEntry> registry = {
      {"torch_ddp", "data parallel, fp32", make_data_parallel, kAll},
      {"torch_ddp_fp16", "data parallel, bf16/fp16 compute with fp32 master weights", make_data_parallel, kAll},
      {"low_level_zero", "ZeRO-1/2: optimizer states (and gradients) sharded over data-parallel ranks",
       make_data_parallel, kAll},
      {"gemini", "ZeRO-3 over parameter chunks with prefetch and CPU offload", make_gemini, kAll},
      {"hybrid_parallel", "tensor x pipeline x data parallel (Megatron 1-D, 1F1B, optional ZeRO-1)",
       make_hybrid_parallel, kAll},
  };
  return registry;
}

void append_param_runs(const model::ParamLayout& layout, int64_t lo, int64_t hi, std::vector<TensorRun>& out) {
  for (const model::ParamInfo& p : layout.params()) {
    const int64_t a = std::max(lo, p.offset), e = std::min(hi, p.offset + p.numel);
    if (a < e) out.push_back(TensorRun{p.name, a - p.offset, e - a});
  }
}

RecipeSupport recipe_support_of(const std::string& name) {
  for (const PluginEntry& e : plugin_registry()) {
    if (name == e.name) return e.recipe;
  }
  return {};
}

std::vector<std::string> available_plugins() {
  std::vector<std::string> names;
  for (const PluginEntry& e : plugin_registry()) {
    if (e.make) names.push_back(e.name);
  }
  return names;
}

std::unique_ptr<Plugin> make_plugin(const PluginOptions& opts, const model::ViTConfig& cfg,
                                    const model::ComputeConfig& compute, int max_micro_batch,
                                    const PluginEnv& env) {
  for (const PluginEntry& e : plugin_registry()) {
    if (opts.name == e.name && e.make) return e.make(opts, cfg, compute, max_micro_batch, env);
  }
  std::string offered;
  for (const auto& n : available_plugins()) offered += (offered.empty() ? "" : ", ") + n;
  throw UserError(str_cat("plugin.name: '", opts.name, "' is not implemented in this build (available: ", offered,
                          ")"));
}

}  // namespace vit::parallel
