// Reductions and scalar bookkeeping for the optimizer step, on the device.
//
// sum_squares:      out (1) fp32 += sum of x^2 (x any dtype)   (global grad norm^2;
//                   call once per shard/bucket, then all-reduce `out`)
// nonfinite_flag:   flag (1) fp32 = 1 if x holds inf or NaN, else left as is
//                   (so several calls OR together; zero it first)
// sum_squares_flag: both in one sweep over x: sumsq (1) += exactly what sum_squares
//                   adds, flag (1) as nonfinite_flag. On the GPU the per-block
//                   partials go to `partial` (fp32, device, at least 4 x SM count
//                   elements; 4096 always suffices) instead of the runtime's shared
//                   scratch, so it may run on a second stream while kernels on the
//                   compute stream use that scratch (gemini: right after a chunk's
//                   reduce-scatter, on the communication stream). `partial` is
//                   ignored on the CPU.
// grad_scale_from_norm: scale (1) fp32 = inv_loss_scale * min(1, max_norm / (norm + 1e-6))
//                   with norm = sqrt(sumsq) * inv_loss_scale; max_norm <= 0 means no
//                   clipping. norm_out (1) fp32 receives the unscaled norm.
// scale_inplace:    x (N) *= s
#pragma once

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

VIT_DECLARE_KERNEL(void, sum_squares, const Context& ctx, Tensor out, const Tensor& x)
VIT_DECLARE_KERNEL(void, nonfinite_flag, const Context& ctx, Tensor flag, const Tensor& x)
VIT_DECLARE_KERNEL(void, sum_squares_flag, const Context& ctx, Tensor sumsq, Tensor flag, const Tensor& x,
                   Tensor partial)
VIT_DECLARE_KERNEL(void, grad_scale_from_norm, const Context& ctx, Tensor scale, Tensor norm_out,
                   const Tensor& sumsq, float max_norm, float inv_loss_scale)
VIT_DECLARE_KERNEL(void, scale_inplace, const Context& ctx, Tensor x, float s)

inline void sum_squares(const Context& ctx, Tensor out, const Tensor& x) {
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(x), sum_squares, ctx, out, x);
}
inline void nonfinite_flag(const Context& ctx, Tensor flag, const Tensor& x) {
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(x), nonfinite_flag, ctx, flag, x);
}
inline void sum_squares_flag(const Context& ctx, Tensor sumsq, Tensor flag, const Tensor& x, Tensor partial) {
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(x), sum_squares_flag, ctx, sumsq, flag, x, partial);
}
inline void grad_scale_from_norm(const Context& ctx, Tensor scale, Tensor norm_out, const Tensor& sumsq,
                                 float max_norm, float inv_loss_scale) {
  VIT_DISPATCH(ctx, grad_scale_from_norm, ctx, scale, norm_out, sumsq, max_norm, inv_loss_scale);
}
inline void scale_inplace(const Context& ctx, Tensor x, float s) { VIT_DISPATCH(ctx, scale_inplace, ctx, x, s); }

}  // namespace vit::kernels
