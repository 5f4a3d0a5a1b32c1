// The Vision Transformer: forward and backward written out per block.
//
//   images uint8 (B, H, W, 3)
//     -> patchify (B, NP, P) -> patch GEMM (B, NP, C) -> + class token, + pos  (B, T, C)
//     -> L pre-norm blocks:  x += proj(attn(qkv(LN1(x))));  x += fc2(gelu(fc1(LN2(x))))
//     -> class token (B, C) -> final LN -> head (B, K) -> softmax cross-entropy
//
// The model owns only activations. Parameters (compute dtype) and gradients
// (fp32) belong to the plugin, which binds them with bind(); both follow
// ParamLayout. Backward accumulates (+=) into the gradient buffer, so
// micro-batches of one step add up, and calls the GradHook each time a
// contiguous range of gradients is final for this micro-batch (head, then
// blocks L-1 .. 0, then embeddings): the data-parallel plugin starts a
// bucket's all-reduce from there while backward goes on.
//
// The stage functions (embed_forward, block_forward, ...) are public so that
// a pipeline schedule can run a subset of the layers.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/device.h"
#include "core/tensor.h"
#include "model/config.h"
#include "model/params.h"

namespace vit::model {

// Called with [begin, end) element ranges of the gradient buffer that are
// final for this micro-batch, in backward order.
using GradHook = std::function<void(int64_t begin, int64_t end)>;

class ViTModel {
 public:
  // Allocates activations for up to max_batch images on ctx.device.
  ViTModel(const ViTConfig& cfg, const ComputeConfig& compute, const Context& ctx, int max_batch);
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

  // params: (N) in the compute dtype; grads: (N) fp32, or undefined for a
  // model that only evaluates. N = layout().total(). Both on ctx.device.
  void bind(const Tensor& params, const Tensor& grads);

  // One micro-batch: forward, loss, backward. images uint8 (B, H, W, 3),
  // labels int32 (B), both on ctx.device. grad_scale multiplies the loss
  // gradient (1 / global batch, times the fp16 loss scale).
  void forward_backward(const Tensor& images, const Tensor& labels, int B, float grad_scale,
                        const GradHook& hook = nullptr);
  // Forward and loss only (evaluation, prediction).
  void forward(const Tensor& images, const Tensor& labels, int B);

  // Results of the last forward, on ctx.device: losses (B) fp32, predicted
  // (B) int32, logits (B, K) compute dtype.
  Tensor losses(int B) const;
  Tensor predicted(int B) const;
  Tensor logits(int B) const;

  // Stages (see the file comment). Block l reads residual(l), writes residual(l+1).
  void embed_forward(const Tensor& images, int B);
  void block_forward(int l, int B);
  void head_forward(const Tensor& labels, int B, float grad_scale, bool want_grad);
  void head_backward(int B);                // d residual(L) from dlogits
  void block_backward(int l, int B);        // d residual(l) from d residual(l+1)
  void embed_backward(int B);               // parameter gradients of the embeddings
  Tensor residual(int l, int B) const;      // (B, T, C), l = 0..L
  Tensor residual_grad(int B) const;        // (B, T, C): gradient of the current residual

  // Bytes of activation memory this model holds.
  size_t activation_bytes() const { return activation_bytes_; }

 private:
  struct BlockActs;
  Tensor param(int index) const;              // compute-dtype view, shaped
  Tensor grad(int index) const;               // fp32 view, shaped
  Buffer alloc(size_t elems, DType t);
  BlockActs& acts_for(int l);

  ViTConfig cfg_;
  ComputeConfig compute_;
  ParamLayout layout_;
  Context ctx_;
  int max_batch_;
  size_t activation_bytes_ = 0;
  std::string attention_note_;
  Tensor params_, grads_;

  std::vector<Buffer> residuals_;             // L + 1 of (B, T, C)
  std::vector<std::unique_ptr<BlockActs>> blocks_;  // L, or 1 shared set with recompute
  Buffer patches_, patch_emb_;                // (B, NP, P), (B, NP, C)
  Buffer cls_, cls_ln_, cls_mean_, cls_rstd_; // (B, C), (B, C), (B), (B)
  Buffer logits_, dlogits_, losses_, predicted_;
  Buffer dres_, dtmp_, dqkv_, dhidden_, dhidden2_, dcls_, dcls_ln_;
};

}  // namespace vit::model
