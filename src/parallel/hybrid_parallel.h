// hybrid_parallel: tensor x pipeline x data parallelism in any combination
// (world = dp x pp x tp, tp fastest; comm/process_mesh.h lays the ranks out).
//
//   tensor parallel   Megatron 1-D over the tp group: every block's qkv and
//                     fc1 column-parallel, proj and fc2 row-parallel; the
//                     model calls TensorParallelGroup (tensor_parallel.h) at
//                     its four reductions. LayerNorms, row-parallel biases,
//                     embeddings and head are replicated: their gradients
//                     come out identical on every tp rank without a reduction.
//   pipeline parallel pp stages of depth/pp blocks each (embeddings on the
//                     first, final norm and head on the last). Each of the
//                     trainer's micro-batches is cut into
//                     plugin.num_microbatches pipeline micro-batches that run
//                     the 1F1B schedule (pipeline_schedule.h): activations go
//                     forward and their gradients backward between
//                     neighbouring stages (NCCL send/recv on the compute
//                     stream on GPUs, MPI on the CPU), at most pp micro-batches
//                     alive per stage (the model's activation slots).
//   data parallel     over what remains: every rank's gradients (of its own
//                     layout) in buckets all-reduced over the dp group while
//                     the last backward of the step runs (grad_buckets.h);
//                     plugin.zero_stage 1 shards the fp32 master weights and
//                     AdamW states over the dp group and all-gathers the
//                     updated compute-dtype parameters (as low_level_zero 1).
//
// What every rank agrees on, with one collective over the world each:
//   loss      per-sample losses exist on the last stage; tp rank 0 of it
//             contributes their sum, the others zero;
//   norm      each rank adds the squares of the gradient values it owns:
//             tp-split parameters on every tp rank, replicated ones on tp
//             rank 0 only; with ZeRO-1 its dp part, without it dp rank 0 the
//             whole (StepFinisher::set_norm_grads);
//   overflow  every rank checks all the gradients it updates; summed flags
//             skip the step everywhere alike;
//   eval      sums of the last stage's tp rank 0, summed over the world.
// Training recipe (plugin.h RecipeSupport): each pipeline micro-batch
// carries its slice of the trainer's micro-batch extras; every stage and tp
// rank gives the model the same noise key and global sample positions, so
// drop path and dropout masks are those of one rank on the whole batch
// (block indices are the whole model's), and the last stage's loss gets the
// mixup/cutmix second labels and shares. Per-parameter lr and weight decay
// (layer_decay, no_decay_bias_norm): the optimizer's views are split at this
// rank's parameter boundaries, each piece with its full-model parameter's
// multipliers (tp slices and stage-local tensors keep their full names).
// The weight average (ema_decay) is the StepFinisher's over the same views:
// swap_ema() swaps them (ZeRO-1: then all-gathers as after a step), and
// checkpoints carry it as the part "ema" in the master weights' runs.
// load_params takes the full fp32 vector and keeps this rank's slice;
// gather_params / gather_grads assemble the full vector on every rank from
// one contributor per element (dp rank 0; tp rank 0 for replicated ones).
#pragma once

#include <memory>
#include <vector>

#include "model/params.h"
#include "parallel/plugin.h"

namespace vit::parallel {

// One pipeline action as the host clock saw it (seconds from the start of
// the train_step), recorded while timing is on.
struct PipeEvent {
  int op = 0;  // PipeAction::Op
  int micro = 0;
  double begin = 0, end = 0;
};

// What the pipeline did in the last train_step of this rank (host clock).
struct PipelineStats {
  int stage = 0, stages = 1;
  int slots = 1;              // activation sets the model holds
  int micro_batches = 0;      // pipeline micro-batches run in the step (all accumulation rounds)
  int max_in_flight = 0;      // most micro-batches whose activations were alive at once
  int64_t tp_reductions = 0;  // tensor-parallel all-reduces issued since construction
  // Host seconds of the last train_step: forward and backward compute, the
  // pipeline's sends and its receives (an exchange counts as a receive; a
  // blocking receive includes the wait for the neighbour: the bubble), and
  // the whole step. Exact on the CPU; on the GPU only when the plugin was
  // asked to time (set_timing), which synchronises around each action.
  double forward_s = 0, backward_s = 0, send_s = 0, recv_s = 0, step_s = 0;
  std::vector<PipeEvent> events;  // every action of the step, when timing is on
};

class HybridParallel : public Plugin {
 public:
  virtual PipelineStats pipeline_stats() const = 0;
  // Synchronise the stream around every pipeline action so the host clock
  // measures the GPU (benchmark timelines); off by default.
  virtual void set_timing(bool on) = 0;
  // This rank's parameter layout (its stage, its tp slice).
  virtual const model::ParamLayout& local_layout() const = 0;
  // This rank's reduced gradient of the last train_step, local layout,
  // divided by the loss scale (tests: replicated parameters must agree
  // across tp ranks). Not collective.
  virtual std::vector<float> local_grads() = 0;
};

std::unique_ptr<Plugin> make_hybrid_parallel(const PluginOptions& opts, const model::ViTConfig& cfg,
                                             const model::ComputeConfig& compute, int max_micro_batch,
                                             const PluginEnv& env);

}  // namespace vit::parallel
