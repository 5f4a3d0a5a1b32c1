// The training loop and the benchmark loop (DESIGN.md sections 6 and 7).
//
// train():     epochs of the training split through the plugin, evaluation
//              on the validation split after every eval.every_epochs epochs
//              and on the test split at the end, metrics per step/eval/epoch
//              on every rank, a progress bar and epoch summaries on rank 0.
// benchmark(): a randomly initialised model on synthetic images that stay on
//              the device, warm-up steps excluded, then measured steps.
//
// Batches: train.batch_size images per data-parallel rank per micro-batch,
// train.grad_accum micro-batches per optimizer step, so one step consumes
// batch_size x grad_accum x dp images (the global batch), each counted once.
#pragma once

#include <vector>

#include "parallel/plugin.h"
#include "train/environment.h"
#include "train/resume.h"

namespace vit::train {

// The spec's model and plugin sections as the plugin and model see them.
model::ViTConfig model_config(const ExperimentSpec& spec);
model::ComputeConfig compute_config(const ExperimentSpec& spec);
parallel::PluginOptions plugin_options(const ExperimentSpec& spec);

// Refuses (vit::UserError naming the spec fields) recipe options that plugin
// spec.plugin.name does not carry (parallel::RecipeSupport of the registry).
// Called by the preflight (src/train/run.cpp), which vit_hpc runs before
// --check and before every run, so before any GPU work.
void check_recipe_support(const ExperimentSpec& spec);

// Initial fp32 parameters, identical on every rank: the published init from
// run.seed, or the checkpoint named by model.pretrained. `note` (optional)
// receives a line saying which, and whether a head was re-initialised.
std::vector<float> initial_parameters(const ExperimentSpec& spec, const model::ViTConfig& cfg,
                                      std::string* note);

// Trains; `plan` (train/resume.h) says whether it resumes from a checkpoint.
// Exit status: 0 done, 1 failed (diverged, a checkpoint that could not be
// written), 2 refused before training, kExitInterrupted (75) stopped on
// request after saving a checkpoint (train/stop_signals.h).
int train(RunEnvironment& env, const ResumePlan& plan);
int benchmark(RunEnvironment& env);

}  // namespace vit::train
