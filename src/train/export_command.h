// `vit_hpc export --checkpoint DIR --output HF_DIR`: the model of a
// training-state checkpoint (its fp32 master weights) as a Hugging Face
// folder (model.safetensors + config.json), as checkpoint.export_hf writes
// after training. DIR is a checkpoint folder (step_000123) or a
// checkpoint.dir (its newest complete checkpoint). One process, no MPI, no
// GPU; every shard's CRC-32 is checked first.
#pragma once

namespace vit {

// argv[0] is "export". Returns the process exit status (0, 2 bad input, 1 other).
int export_main(int argc, char** argv);

}  // namespace vit
