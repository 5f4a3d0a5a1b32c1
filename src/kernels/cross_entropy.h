// Softmax cross-entropy over class logits, loss and gradient in one pass.
//
// logits (B, K) compute dtype; labels (B) int32 in [0, K).
// losses (B) fp32      = logsumexp(logits[b]) - logits[b, label]
// predicted (B) int32  = argmax_k logits[b, k] (lowest index on ties)
// dlogits (B, K)       = (softmax(logits[b]) - onehot(label)) * grad_scale
//                        assigned; skipped when undefined (evaluation).
// grad_scale folds in 1 / (global batch) and the fp16 loss scale, so the
// gradient that reaches the parameters is already the mean over the global
// batch, scaled.
#pragma once

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

VIT_DECLARE_KERNEL(void, softmax_cross_entropy, const Context& ctx, Tensor losses, Tensor predicted,
                   Tensor dlogits, const Tensor& logits, const Tensor& labels, float grad_scale)

inline void softmax_cross_entropy(const Context& ctx, Tensor losses, Tensor predicted, Tensor dlogits,
                                  const Tensor& logits, const Tensor& labels, float grad_scale) {
  VIT_DISPATCH(ctx, softmax_cross_entropy, ctx, losses, predicted, dlogits, logits, labels, grad_scale);
}

}  // namespace vit::kernels
