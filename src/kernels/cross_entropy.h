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
//
// Soft targets (softmax_cross_entropy_soft): the target of sample b is the
// distribution
//   t[b, k] = (1 - eps) * (lam_b * [k == a_b] + (1 - lam_b) * [k == c_b]) + eps / K
// with a_b = labels[b], c_b = labels_b[b] (the second image's label of a
// mixup/cutmix pair), lam_b = lambda[b] (the first image's share) and eps the
// label smoothing. Then
//   losses[b]  = logsumexp(logits[b]) - sum_k t[b, k] logits[b, k]
//              = lse - (1 - eps) (lam x_a + (1 - lam) x_c) - eps * mean_k x_k
//   dlogits    = (softmax(logits[b]) - t[b]) * grad_scale
// labels_b and lambda are optional together (undefined: lam = 1, a hard
// label); eps = 0 and no labels_b is exactly softmax_cross_entropy. The
// triple (a, c, lam) travels instead of a (B, K) target: K may be large, the
// triple is what the loader produces, and t is formed on the fly.
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

// What a training sample's target is beside its label (see the file comment).
struct SoftTargets {
  Tensor labels_b;         // int32 (B) on the logits' device, or undefined
  Tensor lambda;           // fp32 (B): weight of `labels`; defined exactly when labels_b is
  float smoothing = 0.0f;  // eps in [0, 1)
};

VIT_DECLARE_KERNEL(void, softmax_cross_entropy_soft, const Context& ctx, Tensor losses, Tensor predicted,
                   Tensor dlogits, const Tensor& logits, const Tensor& labels, const SoftTargets& targets,
                   float grad_scale)

inline void softmax_cross_entropy_soft(const Context& ctx, Tensor losses, Tensor predicted, Tensor dlogits,
                                       const Tensor& logits, const Tensor& labels, const SoftTargets& targets,
                                       float grad_scale) {
  VIT_DISPATCH(ctx, softmax_cross_entropy_soft, ctx, losses, predicted, dlogits, logits, labels, targets,
               grad_scale);
}

}  // namespace vit::kernels
