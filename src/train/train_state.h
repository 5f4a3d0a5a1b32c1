// The training state the trainer owns: everything besides the plugin's
// tensors that a resumed run needs to continue exactly where the saved one
// stopped (docs/checkpoints.md, train_state.json).
//
// What makes "exactly" possible: every random choice of a run is a pure
// function of run.seed and a position, never a stream that advanced:
//   - the sampler's permutation of epoch e:        Rng(mix_seed(seed, e, ...))
//   - the augmentation of image i in epoch e:      Rng(mix_seed(augment_seed, e, i))
//   - the initial weights (not needed on resume):  Rng(mix_seed(seed, ..., parameter))
// so the "RNG streams" are the seeds plus the position (epoch, step in the
// epoch). The learning rate is a pure function of the step and the schedule
// recorded here. What does advance from step to step is kept explicitly:
// the AdamW step number (skipped steps do not advance it), the loss scaler,
// the count of non-finite steps in a row, the running sums of the epoch's
// summary line, and how far each rank's metrics file had got.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "train/loss_scaler.h"

namespace vit::train {

// The running sums behind an epoch's summary line ("type": "epoch").
struct EpochProgress {
  double loss_sum = 0;     // sum of the step losses so far
  int64_t images = 0;      // images of the steps so far (global)
  double seconds = 0;      // wall time spent in the epoch so far (not part of exactness)
};

struct TrainState {
  int64_t step = 0;             // optimizer steps taken and recorded so far (the next one is step + 1)
  int64_t adam_step = 1;        // AdamW step number of the next step that is applied
  int64_t epoch = 1;            // 1-based epoch of the next step
  int64_t step_in_epoch = 0;    // steps of that epoch already taken
  int64_t images_in_epoch = 0;  // images of that epoch's permutation already consumed
  EpochProgress progress;       // of that epoch
  LossScalerState scaler;
  int64_t nonfinite_in_row = 0;  // consecutive steps with a non-finite loss or gradient norm

  // The learning-rate schedule it followed (lr at step s = schedule(s)).
  double base_lr = 0;
  int64_t total_steps = 0;
  int64_t warmup_steps = 0;
  std::string schedule;
  int64_t steps_per_epoch = 0;
  // Random streams: the seeds (positions are epoch and step_in_epoch above).
  uint64_t seed = 0;
  uint64_t augment_seed = 0;

  // eval.keep_best: the best validation so far (format 2; absent from older
  // checkpoints and from runs without keep_best: keep_best false). Its
  // weights are the checkpoint's best_weights.safetensors (when best_epoch > 0).
  bool keep_best = false;
  int64_t best_epoch = 0;     // 0: no validation yet
  double best_accuracy = 0;

  // Metrics: bytes of each world rank's rank_<r>.jsonl when the state was
  // taken, and the run folder they belong to.
  std::string results_dir;
  std::vector<int64_t> metrics_bytes;

  // Who wrote it: the model (to rebuild it for an export), the label names,
  // the layout (plugin, ranks, batch) and the whole resolved spec.
  model::ViTConfig model;
  std::vector<std::string> class_names;
  nlohmann::json layout;  // plugin, variant, precision, world_size, dp, tp, pp, batch_size, grad_accum, global_batch
  nlohmann::json spec;    // spec_to_json of the writing run
};

nlohmann::json train_state_to_json(const TrainState& s);
// Throws vit::UserError naming `where` (the file) on a missing or mistyped field.
TrainState train_state_from_json(const nlohmann::json& j, const std::string& where);

nlohmann::json model_config_to_json(const model::ViTConfig& c);
model::ViTConfig model_config_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace vit::train
