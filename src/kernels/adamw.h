// AdamW on flat fp32 buffers (decoupled weight decay, torch.optim.AdamW):
//   g  = grad * grad_scale
//   m  = beta1 m + (1 - beta1) g
//   v  = beta2 v + (1 - beta2) g^2
//   p  = p - lr * weight_decay * p
//   p  = p - lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps)
// param, m, v, grad: (N) fp32. param_lowp (N), optional: receives the updated
// parameters cast to the compute dtype (the copy that forward reads).
// grad_scale (1) fp32 on the device (undefined = 1): the product of
// 1/loss_scale and the clipping coefficient, computed on the device so that
// the step needs no host synchronisation. skip (1) fp32 (undefined = never):
// when nonzero the update is not applied (an fp16 overflow).
// step is 1-based and counts applied (not skipped) steps.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

struct AdamWHyper {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  int64_t step = 1;
};

VIT_DECLARE_KERNEL(void, adamw_update, const Context& ctx, Tensor param, Tensor m, Tensor v, const Tensor& grad,
                   Tensor param_lowp, const AdamWHyper& hp, const Tensor& grad_scale, const Tensor& skip)

inline void adamw_update(const Context& ctx, Tensor param, Tensor m, Tensor v, const Tensor& grad,
                         Tensor param_lowp, const AdamWHyper& hp, const Tensor& grad_scale, const Tensor& skip) {
  // param, m and v are read and written, grad read, param_lowp written.
  VIT_DISPATCH_BYTES(ctx, 2.0 * tensor_bytes(param, m, v) + tensor_bytes(grad, param_lowp), adamw_update, ctx, param,
                     m, v, grad, param_lowp, hp, grad_scale, skip);
}

}  // namespace vit::kernels
