// Exponential moving average of the weights (the optimizer's shadow copy).
//
// ema_update: ema (N) fp32 += (1 - decay) * (param (N) fp32 - ema), unless
//             skip (1) fp32 (device, undefined = never) is nonzero (an fp16
//             overflow step, skipped by AdamW too). Written as a step towards
//             param rather than decay * ema + (1 - decay) * param, so a
//             parameter that does not move leaves its average exactly where
//             it is (no rounding drift).
// swap_values: a (N) <-> b (N), fp32 (puts the average in place of the
//             master weights for evaluation and export, and back).
#pragma once

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

VIT_DECLARE_KERNEL(void, ema_update, const Context& ctx, Tensor ema, const Tensor& param, float decay,
                   const Tensor& skip)
VIT_DECLARE_KERNEL(void, swap_values, const Context& ctx, Tensor a, Tensor b)

inline void ema_update(const Context& ctx, Tensor ema, const Tensor& param, float decay, const Tensor& skip) {
  VIT_DISPATCH(ctx, ema_update, ctx, ema, param, decay, skip);
}
inline void swap_values(const Context& ctx, Tensor a, Tensor b) { VIT_DISPATCH(ctx, swap_values, ctx, a, b); }

}  // namespace vit::kernels
