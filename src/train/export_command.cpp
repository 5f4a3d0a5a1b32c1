#include "train/export_command.h"

#include <cstdio>
#include <iostream>

#include <boost/program_options.hpp>

#include "core/error.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/hf_checkpoint.h"

namespace po = boost::program_options;

namespace vit {

namespace {

int run_export(const std::string& checkpoint, const std::string& output) {
  VIT_USER_CHECK(!checkpoint.empty(), "vit_hpc export: --checkpoint is required (a checkpoint folder or checkpoint.dir)");
  VIT_USER_CHECK(!output.empty(), "vit_hpc export: --output is required (the folder to write)");
  train::CheckpointReader reader(checkpoint);
  reader.verify_shards(0, 1);
  const train::TrainState& st = reader.state();
  const model::ParamLayout layout(st.model);
  reader.check_matches(layout);
  std::vector<float> params(static_cast<size_t>(layout.total()));
  for (const model::ParamInfo& p : layout.params()) {
    const std::vector<float> v = reader.read_tensor(parallel::StatePart::Master, p.name);
    std::copy(v.begin(), v.end(), params.begin() + p.offset);
  }
  train::export_hf_vit(output, st.model, params, st.class_names);
  std::printf("vit_hpc export: %s (step %lld) -> %s (model.safetensors + config.json)\n", reader.dir().c_str(),
              static_cast<long long>(reader.step()), output.c_str());
  return 0;
}

}  // namespace

int export_main(int argc, char** argv) {
  std::string checkpoint, output;
  po::options_description opts("vit_hpc export options");
  opts.add_options()
      ("checkpoint", po::value(&checkpoint), "a checkpoint folder (step_000123) or a checkpoint.dir (its newest)")
      ("output", po::value(&output), "folder to write model.safetensors and config.json into")
      ("help,h", "print this help");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << "Usage: vit_hpc export --checkpoint DIR --output HF_DIR\n\n"
                   "Writes the fp32 weights of a training-state checkpoint as a Hugging Face\n"
                   "ViTForImageClassification folder (what checkpoint.export_hf writes after training).\n\n"
                << opts;
      return 0;
    }
    return run_export(checkpoint, output);
  } catch (const po::error& e) {
    std::fprintf(stderr, "vit_hpc export: %s (see vit_hpc export --help)\n", e.what());
    return 2;
  } catch (const UserError& e) {
    std::fprintf(stderr, "vit_hpc export: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vit_hpc export: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace vit
