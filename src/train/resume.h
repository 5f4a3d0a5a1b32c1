// Whether a run starts afresh or resumes, decided once in the preflight on
// every rank (no GPU touched) from checkpoint.dir, checkpoint.resume and the
// run folder (docs/checkpoints.md, "Resuming"):
//   - resume auto: the newest complete checkpoint in checkpoint.dir, if any;
//     true: it must exist; false: checkpoint.dir must hold none (a fresh run
//     would mix its checkpoints with another run's);
//   - the checkpoint's index and train state are read and checked, this
//     rank's share of the shard files is checked against their CRC-32, and
//     the model of the spec must have the checkpoint's tensors and shapes;
//   - a run folder that already exists is continued only by a resume from a
//     checkpoint of that same folder, on as many ranks as wrote its metrics
//     files, and only when its manifest does not belong to a live run.
// Throws vit::UserError with what to change.
#pragma once

#include <string>

#include "io/spec.h"

namespace vit::train {

struct ResumePlan {
  std::string checkpoint;        // the step folder to resume from; "" = start afresh
  std::string note;              // a line for the log ("latest is missing; using ...")
  bool same_run_folder = false;  // the run folder exists and this run continues its files
};

ResumePlan plan_resume(const ExperimentSpec& spec, int world_rank, int world_size);

}  // namespace vit::train
