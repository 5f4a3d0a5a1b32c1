// Element-wise sums of the residual stream.
//
// add:        out (N) = a (N) + b (N)      (out may alias a or b)
// accumulate: dst (N) += src (N)           (gradients meeting at a fork)
#pragma once

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

VIT_DECLARE_KERNEL(void, residual_add, const Context& ctx, Tensor out, const Tensor& a, const Tensor& b)
VIT_DECLARE_KERNEL(void, accumulate, const Context& ctx, Tensor dst, const Tensor& src)

inline void residual_add(const Context& ctx, Tensor out, const Tensor& a, const Tensor& b) {
  VIT_DISPATCH(ctx, residual_add, ctx, out, a, b);
}
inline void accumulate(const Context& ctx, Tensor dst, const Tensor& src) {
  VIT_DISPATCH(ctx, accumulate, ctx, dst, src);
}

}  // namespace vit::kernels
