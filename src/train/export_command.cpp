#include "train/export_command.h"

#include <cstdio>
#include <iostream>

#include <boost/program_options.hpp>

#include "core/error.h"
#include "io/cli.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/hf_checkpoint.h"

namespace po = boost::program_options;

namespace vit {

namespace {

// Which weights of the checkpoint to write: "auto" is what checkpoint.export_hf
// writes when a run ends there: the best validation epoch's weights when the
// run keeps them (eval.keep_best), else the weight average when it has one
// (train.ema_decay), else the trained (master) weights.
std::string resolve_weights(const train::CheckpointReader& reader, const std::string& asked) {
  const bool has_best = reader.state().keep_best && reader.state().best_epoch > 0;
  const bool has_ema = reader.has_part(parallel::StatePart::Ema);
  if (asked == "auto") return has_best ? "best" : has_ema ? "ema" : "master";
  VIT_USER_CHECK(asked == "master" || asked == "ema" || asked == "best", "vit_hpc export: --weights ", asked,
                 ": unknown (allowed: auto, master, ema, best)");
  VIT_USER_CHECK(asked != "ema" || has_ema, "vit_hpc export: --weights ema: ", reader.dir(),
                 " holds no weight average (the run had train.ema_decay 0, or wrote checkpoint format 1); "
                 "use --weights master");
  VIT_USER_CHECK(asked != "best" || has_best, "vit_hpc export: --weights best: ", reader.dir(),
                 " holds no best-model weights (eval.keep_best was off, or no validation had run yet); "
                 "use --weights master");
  return asked;
}

int run_export(const std::string& checkpoint, const std::string& output, const std::string& weights) {
  VIT_USER_CHECK(!checkpoint.empty(), "vit_hpc export: --checkpoint is required (a checkpoint folder or checkpoint.dir)");
  VIT_USER_CHECK(!output.empty(), "vit_hpc export: --output is required (the folder to write)");
  train::CheckpointReader reader(checkpoint);
  reader.verify_shards(0, 1);
  const train::TrainState& st = reader.state();
  const model::ParamLayout layout(st.model);
  reader.check_matches(layout);
  const std::string which = resolve_weights(reader, weights);
  std::vector<float> params;
  if (which == "best") {
    params = reader.read_best_weights(layout);
  } else {
    params.resize(static_cast<size_t>(layout.total()));
    const parallel::StatePart part = which == "ema" ? parallel::StatePart::Ema : parallel::StatePart::Master;
    for (const model::ParamInfo& p : layout.params()) {
      const std::vector<float> v = reader.read_tensor(part, p.name);
      std::copy(v.begin(), v.end(), params.begin() + p.offset);
    }
  }
  train::export_hf_vit(output, st.model, params, st.class_names);
  const char* what = which == "best"  ? "the best validation epoch's weights"
                     : which == "ema" ? "the weight average"
                                      : "the trained weights";
  std::printf("vit_hpc export: %s (step %lld), %s -> %s (model.safetensors + config.json)\n", reader.dir().c_str(),
              static_cast<long long>(reader.step()), what, output.c_str());
  return 0;
}

}  // namespace

int export_main(int argc, char** argv) {
  std::string checkpoint, output, weights = "auto";
  po::options_description opts("vit_hpc export options");
  opts.add_options()
      ("checkpoint", po::value(&checkpoint), "a checkpoint folder (step_000123) or a checkpoint.dir (its newest)")
      ("output", po::value(&output), "folder to write model.safetensors and config.json into")
      ("weights", po::value(&weights), "auto (what checkpoint.export_hf writes: best, else ema, else master), "
                                       "master, ema (the weight average) or best (eval.keep_best's)")
      ("help,h", "print this help");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << "Usage: vit_hpc export --checkpoint DIR --output HF_DIR [--weights auto|master|ema|best]\n\n"
                   "Writes the fp32 weights of a training-state checkpoint as a Hugging Face\n"
                   "ViTForImageClassification folder (by default what checkpoint.export_hf writes after\n"
                   "training: the best validation epoch's weights, the weight average or the trained weights).\n\n"
                << opts;
      return 0;
    }
    return run_export(checkpoint, output, weights);
  } catch (...) {
    return subcommand_failure("vit_hpc export");
  }
}

}  // namespace vit
