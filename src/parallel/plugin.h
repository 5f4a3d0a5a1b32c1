// The parallel-training plugins behind one interface (DESIGN.md section 1).
//
// The trainer hands a plugin this rank's micro-batches (host memory) and gets
// back the step's global loss, gradient norm and whether the step was
// applied; it never learns how parameters, gradients and optimizer states
// are placed, sharded or communicated. A plugin owns the model, its flat
// buffers (master fp32 parameters, compute-dtype copy, fp32 gradients, AdamW
// states) and the communicators it needs. Plugins know nothing of YAML: the
// trainer translates the spec into PluginOptions.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/dtype.h"
#include "model/config.h"

namespace vit::comm {
class Communicator;
class ProcessMesh;
}  // namespace vit::comm

namespace vit::parallel {

struct PluginOptions {
  std::string name = "torch_ddp";
  DType precision = DType::F32;      // compute dtype; master weights and optimizer states stay fp32
  size_t bucket_bytes = 25u << 20;   // gradient bucket size (data parallel)
  bool overlap_comm = true;          // reduce buckets while backward goes on
  // AdamW
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  float grad_clip = 0.0f;            // global-norm clipping; 0 = off
};

// One micro-batch of this rank.
struct MicroBatch {
  const uint8_t* images = nullptr;   // (B, H, W, 3)
  const int32_t* labels = nullptr;   // (B), host memory
  int count = 0;                     // B; may be 0 on a rank whose share of a last batch is empty
  bool on_device = false;            // images already live on the plugin's device (benchmark data)
};

struct StepResult {
  double loss = 0.0;         // mean loss over the global batch
  double grad_norm = 0.0;    // global gradient norm before clipping, unscaled
  bool skipped = false;      // an fp16 overflow: nothing was applied
};

struct EvalResult {
  double loss_sum = 0.0;     // summed over samples
  int64_t correct = 0;
  int64_t count = 0;
};

class Plugin {
 public:
  virtual ~Plugin() = default;
  virtual std::string name() const = 0;

  // Every rank passes the same full fp32 parameter vector (fresh init or a
  // loaded checkpoint); the plugin keeps what it owns of it.
  virtual void load_params(const std::vector<float>& full) = 0;
  // The full fp32 parameters, assembled on every rank (export, checks).
  virtual std::vector<float> gather_params() = 0;
  // The full fp32 gradient of the last train_step as the optimizer saw it
  // before clipping: summed over the data-parallel ranks and divided by the
  // loss scale, i.e. the gradient of the mean loss over the global batch.
  // Collective (every rank calls it); for tests and debugging.
  virtual std::vector<float> gather_grads() = 0;

  // One optimizer step. `micro` holds this rank's gradient-accumulation
  // micro-batches; global_count is the number of images in the step over all
  // data-parallel ranks (the loss is a mean over them). loss_scale is the
  // fp16 scale to apply (1 otherwise).
  virtual StepResult train_step(const std::vector<MicroBatch>& micro, int64_t global_count, float lr,
                                float loss_scale, int64_t adam_step) = 0;

  // Forward only on this rank's batch; sums over its samples.
  virtual EvalResult eval_batch(const MicroBatch& batch) = 0;
  // Sums an EvalResult over the data-parallel ranks.
  virtual EvalResult all_reduce_eval(const EvalResult& local) = 0;

  // Images each optimizer step consumes per data-parallel replica multiple.
  virtual int data_parallel_size() const = 0;
  virtual int data_parallel_rank() const = 0;
};

struct PluginEnv {
  Context ctx;                         // device, stream, GPU handles
  comm::ProcessMesh* mesh = nullptr;   // process groups (dp, tp, pp)
};

// Builds the plugin named in opts.name; throws vit::UserError for a plugin
// this build does not offer.
std::unique_ptr<Plugin> make_plugin(const PluginOptions& opts, const model::ViTConfig& cfg,
                                    const model::ComputeConfig& compute, int max_micro_batch,
                                    const PluginEnv& env);

// The plugin names this build offers, in canonical order.
std::vector<std::string> available_plugins();

}  // namespace vit::parallel
