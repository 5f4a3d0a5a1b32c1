// The end of an optimizer step, shared by every plugin: global gradient norm,
// non-finite check, clipping factor and AdamW, over a list of shard views.
//
// Each ShardView is one contiguous run of parameters this rank updates: fp32
// master weights, AdamW m and v, the fp32 gradient (reduced, still multiplied
// by the loss scale) and optionally the compute-dtype copy that AdamW
// refreshes. A replicated plugin passes one view of everything; a sharded
// one (ZeRO, gemini) passes its parts. Queued on ctx's stream, no host sync:
//
//   sumsq = sum over views of |grad|^2;  flag = any grad non-finite
//   all-reduce (sumsq, flag) over `group` when the views are shards of the
//     gradient that other ranks hold the rest of (nullptr: this rank's views
//     cover the whole gradient)
//   norm = sqrt(sumsq) / loss_scale;  factor = min(1, clip / norm) / loss_scale
//   flag also when sumsq itself is not finite (finite gradients whose squares overflow)
//   AdamW on every view with grad * factor, skipped everywhere when flag
//     (view v with lr * v.lr_mult and weight_decay * v.wd_mult)
//   with hyper.ema_decay > 0: ema_v += (1 - decay) (master_v - ema_v) after
//     the update, skipped with it
//
// Per-view multipliers (layer-wise lr decay, no decay on biases and norms)
// need views that do not straddle parameters with different multipliers:
// param_groups.h splits a plugin's views at parameter boundaries.
//
// The weight average (EMA) lives here, beside the master weights it follows,
// one fp32 buffer per view on the view's device: it shards exactly as the
// master weights do, and every plugin that ends its step here has it. It
// starts as a copy of the master weights at the first finish() (or the first
// after reset_ema()). swap_ema() exchanges master weights and averages in
// place and refreshes the compute-dtype copies, so that evaluation or export
// read the average; a second swap_ema() puts the trained weights back (the
// plugin re-gathers what other ranks need after each swap).
//
// By default the norm sums the views' gradients. A plugin whose ranks hold
// some gradient values more than once (tensor-parallel ranks share their
// replicated parameters, data-parallel replicas the whole reduced gradient)
// names with set_norm_grads() the runs this rank counts, so that over
// `group` every element is counted exactly once; the non-finite check still
// covers every view.
//
// read_back() copies norm and flag to pinned host memory (asynchronously,
// on the stream); after the caller synchronises the stream, grad_norm() and
// skipped() hold the step's values. Every rank of `group` reaches the same
// decision because it acts on the same reduced scalars.
#pragma once

#include <cstdint>
#include <vector>

#include "core/context.h"
#include "core/device.h"
#include "core/tensor.h"

namespace vit::comm {
class Communicator;
}

namespace vit::parallel {

struct ShardView {
  Tensor master, m, v, grad;  // fp32 (n) each
  Tensor lowp;                // compute dtype (n), or undefined
  float lr_mult = 1.0f;       // this view's lr = step lr x lr_mult
  float wd_mult = 1.0f;       // its weight decay = weight_decay x wd_mult
};

struct OptimizerHyper {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  float grad_clip = 0.0f;  // global-norm clipping; 0 = off
  float ema_decay = 0.0f;  // weight average; 0 = off
};

class StepFinisher {
 public:
  StepFinisher(const Context& ctx, const OptimizerHyper& hyper, comm::Communicator* group);
  // The gradients whose squares this rank adds to the norm, instead of the
  // views' (views into the same memory; kept until replaced).
  void set_norm_grads(std::vector<Tensor> grads);
  // Queues the norm, the checks and the update (see the file comment).
  void finish(const std::vector<ShardView>& views, float lr, float loss_scale, int64_t adam_step);
  // Queues the copy of (norm, flag) to the host.
  void read_back();
  // After the stream was synchronised following read_back().
  float grad_norm() const;
  bool skipped() const;

  bool has_ema() const { return hyper_.ema_decay > 0.0f; }
  // The next finish() starts the average afresh from the master weights
  // (after a plugin loaded new parameters).
  void reset_ema() { ema_fresh_ = false; }
  // Master weights <-> averages on every view (and the compute-dtype copies
  // refreshed from the new master). Queued on the stream. Needs has_ema() and
  // a finish() before; the views must be those finish() was given.
  void swap_ema(const std::vector<ShardView>& views);

  // Checkpoints: the averages in the layout of the plugin's master-weight
  // buffer. Every view's master tensor lies inside one fp32 buffer that
  // starts at `master_base` (the plugin's master weights, its shard when
  // sharded); `ema` is a buffer of the same layout on the same device, and
  // view i's average sits at the view's offset from master_base. Elements no
  // view covers (padding) are left as they are. Queued on the stream.
  // export_ema: before any finish() the average is the weights themselves
  // (as ensure_ema makes it). import_ema: the average continues from `ema`
  // (the next finish() does not restart it). Need has_ema().
  void export_ema(const std::vector<ShardView>& views, const float* master_base, float* ema);
  void import_ema(const std::vector<ShardView>& views, const float* master_base, const float* ema);
  // The same through host memory, for checkpoints: `elements` fp32 values
  // in the master-weight layout (padding zero on export), staged through a
  // device buffer; both return once the copies have landed.
  std::vector<float> export_ema_to_host(const std::vector<ShardView>& views, const float* master_base,
                                        int64_t elements);
  void import_ema_from_host(const std::vector<ShardView>& views, const float* master_base,
                            const std::vector<float>& ema);
  // View i's average itself (fp32, views[i].master's size, on its device),
  // for a plugin whose views lie in separate buffers (gemini's chunk parts)
  // to read or overwrite in place; before any finish() it is made from the
  // weights first (as ensure_ema does), and the next finish() continues it.
  // Needs has_ema().
  Tensor ema_of(const std::vector<ShardView>& views, size_t i);

  // For a plugin that runs the AdamW of these views itself (gemini with
  // offloaded chunks, whose step ends on the host): queue, around its
  // updates, what finish() does for the average. begin_ema before the
  // updates (the average starts from the weights before the first), then
  // update_ema after them, skipped where `skip` (1, device, undefined =
  // never) is nonzero. No-ops without has_ema().
  void begin_ema(const std::vector<ShardView>& views);
  void update_ema(const std::vector<ShardView>& views, const Tensor& skip);

 private:
  // One average per view, allocated (allocate_ema) and filled from the
  // master weights on first use.
  void allocate_ema(const std::vector<ShardView>& views);
  void ensure_ema(const std::vector<ShardView>& views);
  // Where view i's average sits in a buffer laid out as the master weights.
  int64_t view_offset(const ShardView& v, const float* master_base) const;

  Context ctx_;
  OptimizerHyper hyper_;
  comm::Communicator* group_;
  bool own_norm_grads_ = false;
  std::vector<Tensor> norm_grads_;
  static constexpr int64_t kPartials = 4096;  // sum_squares_flag's per-block partials (reduce.h)
  Buffer scalars_;       // device: sumsq, flag, clip*unscale factor, norm, then kPartials partials
  Buffer host_scalars_;  // pinned copy of norm and flag
  std::vector<Buffer> ema_;  // per view, fp32 (n) on the view's device
  bool ema_fresh_ = false;   // ema_ holds averages of the current weights
};

}  // namespace vit::parallel
