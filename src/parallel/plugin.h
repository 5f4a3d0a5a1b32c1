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
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/dtype.h"
#include "core/error.h"
#include "model/config.h"
#include "parallel/param_groups.h"
#include "parallel/step_finisher.h"

namespace vit::comm {
class Communicator;
class ProcessMesh;
}  // namespace vit::comm

namespace vit::parallel {

// Options of the plugins, filled from the spec in one place (the trainer's
// plugin_options()); each plugin reads the common part and its own section.
struct ZeroOptions {          // low_level_zero
  int stage = 2;              // 1: optimizer states sharded; 2: gradients too
};
struct GeminiOptions {        // gemini
  int chunk_size_mb = 32;
  size_t chunk_bytes = 0;     // when nonzero, the chunk size in bytes instead (tests with tiny models)
  float offload_optim_frac = 0.0f, offload_param_frac = 0.0f;
  // When the CPU AdamW of offloaded chunks runs against the next step
  // (plugin.cpu_update: auto, overlap, synchronous; OnDemand is for tests,
  // which compare the four bit for bit).
  enum class CpuUpdate {
    Auto,         // Overlap when the model runs on a GPU; Synchronous when it runs on the CPU, where the
                  // worker's OpenMP team and the forward's, each sized to every core, share the same cores:
                  // nothing to gain (2-core build machine, e2e_base model, offload 1, 12 steps, 2 runs each:
                  // 257-314 images/s overlapped, 248-363 synchronous) and oversubscription to risk
    Overlap,      // on a worker thread, in the order the next forward gathers the chunks; train_step returns
                  // once the loss, norm and skip decision are known; a gather waits for its own chunk only
    Synchronous,  // the same updates, but train_step returns after all of them (uploads queued)
    OnDemand,     // tests: a chunk is updated only when a gather (or anything reading state) asks for it,
                  // so every gather meets a pending update: a missing wait reads old weights every time
  };
  CpuUpdate cpu_update = CpuUpdate::Auto;
};
struct HybridOptions {        // hybrid_parallel
  int tp_size = 1, pp_size = 1, num_microbatches = 1;
  int zero_stage = 0;         // 1: ZeRO-1 inside the data-parallel group
};

struct PluginOptions {
  std::string name = "torch_ddp";
  DType precision = DType::F32;      // compute dtype; master weights and optimizer states stay fp32
  size_t bucket_bytes = 25u << 20;   // gradient bucket size (data parallel)
  bool overlap_comm = true;          // reduce buckets while backward goes on; gather parameters during forward
  DType reduce_dtype = DType::F32;   // the gradient collectives' data type: F32 or BF16 (grad_buckets.h)
  bool cuda_graph = true;            // replay forward + backward as CUDA graphs where it applies (data_parallel.cpp)
  // AdamW
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  float grad_clip = 0.0f;            // global-norm clipping; 0 = off
  float ema_decay = 0.0f;            // weight average kept by the StepFinisher; 0 = off
  ParamGroupOptions groups;          // layer-wise lr decay, no decay on biases/norms (param_groups.h)
  ZeroOptions zero;
  GeminiOptions gemini;
  HybridOptions hybrid;

  OptimizerHyper optimizer() const {
    return OptimizerHyper{beta1, beta2, eps, weight_decay, grad_clip, ema_decay};
  }
};

// One micro-batch of this rank.
struct MicroBatch {
  const uint8_t* images = nullptr;   // (B, H, W, 3)
  const int32_t* labels = nullptr;   // (B), host memory
  int count = 0;                     // B; may be 0 on a rank whose share of a last batch is empty
  bool on_device = false;            // images already live on the plugin's device (benchmark data)
  // Training only, all optional (model::TrainExtras says what the model does with them):
  const int32_t* labels_b = nullptr;   // (B) host: second label of mixup/cutmix images; null: none
  const float* mix_lambda = nullptr;   // (B) host: share of `labels`; given exactly with labels_b
  uint64_t noise_key = 0;              // drop-path/dropout masks of this micro-batch; 0: the model's own
  int64_t first_sample = 0;            // position of its first image in the step's global batch
};

// Which training-recipe options a plugin carries through to its model and
// optimizer. The shared parts do the work (the model: soft targets, drop
// path, dropout; StepFinisher: weight average, per-view multipliers;
// param_groups.h: the split of views; BatchStager: the micro-batch's extras);
// a plugin passes them on (a few lines each, data_parallel.cpp shows where)
// and says so here. The trainer refuses an option the plugin does not carry,
// naming the spec field, instead of silently training something else.
struct RecipeSupport {
  bool train_extras = false;   // MicroBatch labels_b/mix_lambda/noise_key reach the model (mixup, cutmix,
                               // drop path and dropout with rank-independent masks)
  bool param_groups = false;   // views split by split_views (layer_decay, no_decay_bias_norm)
  bool ema = false;            // swap_ema() (evaluation and export of the weight average)
};

// The registry's recipe support of plugin `name` (none for an unknown name;
// plugin_registry() below lists it per plugin).
RecipeSupport recipe_support_of(const std::string& name);

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

// Training-state checkpoints (src/train/checkpoint.h, docs/checkpoints.md).
// A plugin's optimizer state is addressed by full (unsharded) tensors, so a
// checkpoint written under one layout loads under any other: a rank names
// the runs of full-tensor elements it holds, writes their values, and on
// import asks for the runs it needs, whoever wrote them.
// fp32 master weights, AdamW first and second moments, and the weight
// average (ema_decay > 0; the StepFinisher's, in the master weights' layout).
enum class StatePart { Master, AdamM, AdamV, Ema };
// The parts every checkpoint holds; Ema only when the writing run kept an average.
constexpr StatePart kStateParts[] = {StatePart::Master, StatePart::AdamM, StatePart::AdamV};
// kStateParts, then StatePart::Ema when `ema` (the plugins' state_parts() and
// the parts their import_state reads).
std::vector<StatePart> state_parts_with(bool ema);
const char* state_part_name(StatePart part);  // "master", "adam_m", "adam_v", "ema"

// `count` consecutive elements of the full parameter `name` (row-major over
// its global shape, as ParamLayout names it: "blocks.3.attn.qkv.weight"),
// from element `begin`.
struct TensorRun {
  std::string name;
  int64_t begin = 0;
  int64_t count = 0;
};

// Appends the runs of the parameters of `layout` that cover its flat
// elements [lo, hi), for plugins whose layout is unsharded (data parallel
// only: a flat offset inside a parameter is its offset in the full tensor).
void append_param_runs(const model::ParamLayout& layout, int64_t lo, int64_t hi, std::vector<TensorRun>& out);

// Fills dst (run.count fp32 values) with the checkpoint's values of `run` in
// state part `part`; throws vit::UserError when the checkpoint lacks them.
using StateReader = std::function<void(StatePart part, const TensorRun& run, float* dst)>;

class Plugin {
 public:
  virtual ~Plugin() = default;
  virtual std::string name() const = 0;
  // Lines to print once at the start of a job (e.g. that attention runs on
  // another path than asked for this head size); empty when nothing to say.
  virtual std::vector<std::string> notes() const { return {}; }
  // What tells two runs of the same plugin apart beyond precision and layout
  // ("stage 1" for low_level_zero, ...); empty when nothing does. Recorded
  // in the manifest, shown in vit_results' column labels.
  virtual std::string variant() const { return ""; }
  // One line on how the steps ran, for the end of a benchmark or training
  // log (e.g. how many CUDA graph replays); empty when nothing to say.
  virtual std::string run_summary() const { return ""; }

  // Every rank passes the same full fp32 parameter vector (fresh init or a
  // loaded checkpoint); the plugin keeps what it owns of it.
  virtual void load_params(const std::vector<float>& full) = 0;
  // The full fp32 parameters, assembled on every rank (export, checks).
  // Collective.
  virtual std::vector<float> gather_params() = 0;
  // The full fp32 gradient of the last train_step as the optimizer saw it
  // before clipping: summed over the data-parallel ranks and divided by the
  // loss scale, i.e. the gradient of the mean loss over the global batch.
  // Collective (every rank calls it); for tests and debugging.
  virtual std::vector<float> gather_grads() = 0;
  // Bytes this rank holds of optimizer state (fp32 master weights and AdamW
  // moments), wherever they live (device or host).
  virtual size_t optimizer_state_bytes() const = 0;

  // Benchmark mode: record what the next train_step runs when and on which
  // stream (per chunk for gemini), and give it back as text afterwards; ""
  // from plugins that keep no timeline.
  virtual void record_timeline() {}
  virtual std::string timeline() const { return ""; }
  // Checkpoints. The defaults throw vit::UserError("checkpoints are not
  // supported by <plugin> yet"); a plugin implements all three.
  // state_runs(): the runs this rank writes, the same for every part. Over
  // all ranks the runs cover every element of every parameter exactly once
  // (replicated plugins split the writing as ZeRO splits the state), so no
  // rank ever gathers the whole state.
  virtual std::vector<TensorRun> state_runs() const;
  // The parts this rank writes: kStateParts, plus StatePart::Ema when the
  // plugin keeps a weight average (ema_decay > 0). The same on every rank.
  virtual std::vector<StatePart> state_parts() const;
  // This rank's values of `part` (one of state_parts()) for state_runs(),
  // back to back. Not collective.
  virtual std::vector<float> export_state(StatePart part);
  // Replaces the whole training state (master weights, AdamW moments, the
  // weight average, and the compute-dtype copy the model reads) with the
  // checkpoint's, reading through `read` only the runs this rank holds.
  // `has_ema`: the checkpoint holds StatePart::Ema. A plugin that keeps an
  // average reads it when there, and otherwise starts the average afresh
  // from the imported master weights; one that keeps none ignores it.
  // Collective over the plugin's ranks.
  virtual void import_state(const StateReader& read, bool has_ema);
  // Exchanges the weights the model runs with and the weight average
  // (ema_decay > 0): evaluation, gather_params and export then see the
  // average until the next call swaps back. Collective. Only between steps.
  virtual void swap_ema() { VIT_THROW(name(), " does not keep a weight average (ema)"); }

  // One optimizer step. `micro` holds this rank's gradient-accumulation
  // micro-batches; global_count is the number of images in the step over all
  // data-parallel ranks (the loss is a mean over them). loss_scale is the
  // fp16 scale to apply (1 otherwise). The update may still be running when
  // it returns (gemini's CPU AdamW overlaps the next step's forward); every
  // other entry point, the next train_step included, sees the updated state.
  virtual StepResult train_step(const std::vector<MicroBatch>& micro, int64_t global_count, float lr,
                                float loss_scale, int64_t adam_step) = 0;

  // Forward only on this rank's batch (at most the max_micro_batch the
  // plugin was made for); sums over its samples.
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

// The plugin registry: every plugin this build offers, listed once. The
// spec schema's list of names (src/io/spec_schema.cpp) is checked against it
// by a test.
using PluginFactory = std::unique_ptr<Plugin> (*)(const PluginOptions& opts, const model::ViTConfig& cfg,
                                                 const model::ComputeConfig& compute, int max_micro_batch,
                                                 const PluginEnv& env);
struct PluginEntry {
  const char* name;
  const char* summary;
  PluginFactory make;     // nullptr: named in the spec, not built yet
  RecipeSupport recipe;   // the recipe options it carries (checked before any GPU work)
};
const std::vector<PluginEntry>& plugin_registry();

// Builds the plugin named in opts.name; throws vit::UserError for a plugin
// this build does not offer.
std::unique_ptr<Plugin> make_plugin(const PluginOptions& opts, const model::ViTConfig& cfg,
                                    const model::ComputeConfig& compute, int max_micro_batch,
                                    const PluginEnv& env);

// The plugin names this build offers (built ones), in canonical order.
std::vector<std::string> available_plugins();

}  // namespace vit::parallel
