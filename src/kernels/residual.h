// Element-wise sums of the residual stream.
//
// add:        out (N) = a (N) + b (N)      (out may alias a or b)
// accumulate: dst (N) += src (N)           (gradients meeting at a fork)
// add_gradient: dst (N) (+)= src (N), fp32  (a gradient another op summed
//             elsewhere, e.g. a bias gradient from the LayerNorm backward:
//             = as 0 + src when !accumulate, the bits of adding to a zeroed
//             gradient). On the GPU it rides in the deferred folds of a
//             FoldScope (gpu_context.h; one launch with the segment's others):
//             it reads src at the flush. A later fold that writes src is
//             ordered after it (column_sum.h); any other write to src must
//             wait for the flush.
#pragma once

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

VIT_DECLARE_KERNEL(void, residual_add, const Context& ctx, Tensor out, const Tensor& a, const Tensor& b)
VIT_DECLARE_KERNEL(void, accumulate, const Context& ctx, Tensor dst, const Tensor& src)
VIT_DECLARE_KERNEL(void, add_gradient, const Context& ctx, Tensor dst, const Tensor& src, bool accumulate)

inline void residual_add(const Context& ctx, Tensor out, const Tensor& a, const Tensor& b) {
  VIT_DISPATCH(ctx, residual_add, ctx, out, a, b);
}
inline void accumulate(const Context& ctx, Tensor dst, const Tensor& src) {
  VIT_DISPATCH(ctx, accumulate, ctx, dst, src);
}
inline void add_gradient(const Context& ctx, Tensor dst, const Tensor& src, bool accumulate) {
  VIT_DISPATCH(ctx, add_gradient, ctx, dst, src, accumulate);
}

}  // namespace vit::kernels
