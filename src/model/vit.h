// The Vision Transformer: forward and backward written out per block.
//
//   images uint8 (B, H, W, 3)
//     -> patchify (B, NP, P) -> patch GEMM (B, NP, C) -> + class token, + pos  (B, T, C)
//     -> L pre-norm blocks:  x += proj(attn(qkv(LN1(x))));  x += fc2(gelu(fc1(LN2(x))))
//     -> class token (B, C) -> final LN -> head (B, K) -> softmax cross-entropy
//
// The model owns only activations. Parameters (compute dtype) and gradients
// (fp32) come from a ParamSource (param_source.h), which the model tells
// before and after it uses each segment; bind() installs the simplest one
// (two flat buffers). Backward accumulates (+=) into the gradients, so
// micro-batches of one step add up (or assigns them, set_assign_grads), and
// calls after_backward(segment) each time a segment's gradients are final
// (head, then blocks L-1 .. 0, then embeddings): the data-parallel plugins
// start a bucket's reduction there.
//
// A model may be one rank's shard (ParamLayout's ShardSpec): pipeline stages
// hold a range of blocks (plus the embeddings on the first stage, the head on
// the last), tensor-parallel ranks hold NH/tp heads and F/tp MLP columns of
// every block and call the TensorParallelComm at the four places a Megatron
// block communicates (reduce_from_tensor_parallel_region after proj and fc2
// in forward; the backward of copy_to_tensor_parallel_region after the qkv
// and fc1 input gradients). The row-parallel biases (proj, fc2) are added by
// tensor-parallel rank 0 only, before the reduction, so they count once.
//
// Activations: `slots` independent sets of what forward keeps for backward
// (residual stream, block activations, head values), each for up to
// max_batch images, so a pipeline schedule can have several micro-batches in
// flight; backward scratch is shared (one backward runs at a time).
//
// The stage functions (embed_forward, block_forward, ...) are public so that
// a pipeline schedule can run a subset of the layers.
//
// Training and evaluation. forward_backward() is training: it applies the
// regularisation of ComputeConfig::reg (drop path, dropout: random masks
// computed from the micro-batch's noise key, kernels/dropout.h) and the
// micro-batch's soft targets (mixup/cutmix pairs, label smoothing:
// kernels/cross_entropy.h). forward() is evaluation: none of them. The stage
// functions follow set_training() (off by default), so a schedule that calls
// them turns training on for its training step and off again for
// evaluation. What a training micro-batch carries beside its images and
// labels (the second label and its share, the noise key) is given per
// activation slot by set_train_extras() before its forward; forward_backward
// consumes it (a call without it draws masks from an internal counter
// seeded by reg.seed, and uses hard labels).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/device.h"
#include "core/tensor.h"
#include "model/config.h"
#include "model/param_source.h"
#include "model/params.h"

namespace vit::model {

// Sums a tensor over the tensor-parallel ranks, in place, ordered on the
// model's stream (NCCL or MPI behind it; plugins provide it).
class TensorParallelComm {
 public:
  virtual ~TensorParallelComm() = default;
  virtual void all_reduce(Tensor x) = 0;
};

// What a training micro-batch carries beside images and labels (all optional).
struct TrainExtras {
  Tensor labels_b;            // int32 (B) on the model's device: second label of mixed images; undefined: none
  Tensor lambda;              // fp32 (B): the share of `labels` (1 - lambda for labels_b); defined with labels_b
  uint64_t noise_key = 0;     // seeds this micro-batch's drop-path and dropout masks; 0 = none given
  int64_t first_sample = 0;   // position of sample 0 in the step's global batch (masks follow positions)
};

class ViTModel {
 public:
  // Allocates `slots` sets of activations for up to max_batch images on
  // ctx.device, for the part of the model that `shard` describes.
  ViTModel(const ViTConfig& cfg, const ComputeConfig& compute, const Context& ctx, int max_batch,
           const ShardSpec& shard = ShardSpec(), int slots = 1);
  ~ViTModel();
  ViTModel(const ViTModel&) = delete;
  ViTModel& operator=(const ViTModel&) = delete;

  const ViTConfig& config() const { return cfg_; }
  // As asked, except `attention`: the path that actually runs this shape.
  const ComputeConfig& compute() const { return compute_; }
  // Empty, or one sentence saying why attention runs on another path than
  // the one asked for (for the owner to print once).
  const std::string& attention_note() const { return attention_note_; }
  const ParamLayout& layout() const { return layout_; }
  const Context& context() const { return ctx_; }
  int max_batch() const { return max_batch_; }
  int slots() const { return static_cast<int>(acts_.size()); }

  // params: (N) in the compute dtype; grads: (N) fp32, or undefined for a
  // model that only evaluates. N = layout().total(). Both on ctx.device.
  // Installs a FlatParamSource over them (replacing any earlier source).
  void bind(const Tensor& params, const Tensor& grads);
  // Or any other source (not owned; must outlive its use).
  void set_param_source(ParamSource* source);
  // Required when layout().shard().tp_size > 1 (not owned).
  void set_tensor_parallel(TensorParallelComm* tp) { tp_ = tp; }

  // The next training micro-batch of `slot` (see the file comment). Tensors
  // are not copied: they must stay valid until its backward has run.
  void set_train_extras(const TrainExtras& extras, int slot = 0);
  // Whether the following backward passes assign (=) the parameter
  // gradients instead of adding to them (+=): for a plugin that does not zero
  // its gradients before a step's first micro-batch. Every parameter the
  // model holds gets its gradient written in each backward, so nothing stale
  // is left. Off by default; the plugin turns it off again after.
  void set_assign_grads(bool on) { assign_grads_ = on; }
  bool assign_grads() const { return assign_grads_; }
  // Whether the stage functions train (regularisation and soft targets on).
  void set_training(bool on) { training_ = on; }
  bool training() const { return training_; }

  // One micro-batch through the whole model (a model holding every segment):
  // forward, loss, backward. images uint8 (B, H, W, 3), labels int32 (B),
  // both on ctx.device. grad_scale multiplies the loss gradient (1 / global
  // batch, times the fp16 loss scale).
  void forward_backward(const Tensor& images, const Tensor& labels, int B, float grad_scale, int slot = 0);
  // Forward and loss only (evaluation, prediction).
  void forward(const Tensor& images, const Tensor& labels, int B, int slot = 0);

  // Results of the last forward of a slot, on ctx.device: losses (B) fp32,
  // predicted (B) int32, logits (B, K) compute dtype.
  Tensor losses(int B, int slot = 0) const;
  Tensor predicted(int B, int slot = 0) const;
  Tensor logits(int B, int slot = 0) const;

  // Stages (see the file comment). Block l reads residual(l), writes residual(l+1).
  void embed_forward(const Tensor& images, int B, int slot = 0);
  void block_forward(int l, int B, int slot = 0);
  void head_forward(const Tensor& labels, int B, float grad_scale, bool want_grad, int slot = 0);
  void head_backward(int B, int slot = 0);          // d residual(L) from dlogits
  void block_backward(int l, int B, int slot = 0);  // d residual(l) from d residual(l+1)
  void embed_backward(int B, int slot = 0);         // parameter gradients of the embeddings
  // (B, T, C) for l in [first block, end block] of the layout: residual(first)
  // is a stage's input, residual(end) its output.
  Tensor residual(int l, int B, int slot = 0) const;
  Tensor residual_grad(int B) const;  // (B, T, C): gradient of the current residual (shared)

  // Bytes of activation memory this model holds.
  size_t activation_bytes() const { return activation_bytes_; }

 private:
  struct BlockActs;
  struct Activations;
  Tensor param(int index) const;
  Tensor grad(int index) const;
  Buffer alloc(size_t elems, DType t);
  std::unique_ptr<BlockActs> make_block_acts(int64_t B, size_t aux_bytes);
  BlockActs& acts_for(int l, int slot);
  void block_forward_compute(int l, int B, int slot);
  int64_t local_hidden() const;  // C / tp: attention width of this rank
  int64_t local_mlp() const;     // F / tp
  void reduce_over_tp(Tensor x);
  // The random masks of a training pass (no-ops in evaluation or when off).
  // site: 0/1 drop path of the attention/MLP branch, 2/3 their dropout, 4 the embeddings' dropout.
  uint64_t site_key(int l, int site, int slot) const;
  void apply_branch_masks(Tensor out, const Tensor& in, int l, int branch, int B, int slot);
  bool branch_masked(int l) const;

  ViTConfig cfg_;
  ComputeConfig compute_;
  ParamLayout layout_;
  Context ctx_;
  int max_batch_;
  size_t activation_bytes_ = 0;
  std::string attention_note_;
  std::unique_ptr<FlatParamSource> flat_source_;
  ParamSource* source_ = nullptr;
  TensorParallelComm* tp_ = nullptr;
  bool training_ = false;
  bool assign_grads_ = false;
  uint64_t auto_noise_ = 0;  // forward_backward calls without a noise key

  std::vector<std::unique_ptr<Activations>> acts_;
  std::unique_ptr<BlockActs> recompute_acts_;  // one set rebuilt per block in backward (recompute)
  Buffer dres_, dtmp_, dqkv_, dhidden_, dcls_, dcls_ln_;
  bool dqkv_in_place_ = false;  // dqkv over the block's qkv (attention_backward_in_place); dqkv_ unused
  Buffer norm_;  // recompute_norm: the blocks' LayerNorm outputs, one at a time (vit.cpp)
  Buffer dmasked_;  // (B, T, C): a branch's output gradient through its masks (only with drop path / dropout)
  // fc2's bias gradient of block fc2_bias_block_, summed by the LayerNorm
  // backward of the block after it (block_backward): fp32 (2, C), block b's
  // in half b % 2 (fc2_bias_half). The fold adding block b's into its
  // gradient is pending until block b's flush, while block b's own LN1
  // backward folds block b - 1's sums: in the other half, the two share one
  // launch (in one half, fold_into would launch the pending folds first);
  // -1: none.
  Buffer fc2_bias_sums_;
  int fc2_bias_block_ = -1;
  Tensor fc2_bias_half(int block) const;
  Buffer branch_;   // (B, T, C): forward scratch, a block's proj / fc2 output before its residual add (tensor
                    // parallel or masked branches only; otherwise the GEMMs add the residual)
};

}  // namespace vit::model
