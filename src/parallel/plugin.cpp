#include "parallel/plugin.h"

#include "core/error.h"
#include "parallel/torch_ddp.h"

namespace vit::parallel {

std::vector<std::string> available_plugins() { return {"torch_ddp", "torch_ddp_fp16"}; }

std::unique_ptr<Plugin> make_plugin(const PluginOptions& opts, const model::ViTConfig& cfg,
                                    const model::ComputeConfig& compute, int max_micro_batch,
                                    const PluginEnv& env) {
  if (opts.name == "torch_ddp" || opts.name == "torch_ddp_fp16") {
    return make_data_parallel(opts, cfg, compute, max_micro_batch, env);
  }
  std::string offered;
  for (const auto& n : available_plugins()) offered += (offered.empty() ? "" : ", ") + n;
  throw UserError(str_cat("plugin.name: '", opts.name, "' is not implemented in this build (available: ", offered,
                          ")"));
}

}  // namespace vit::parallel
