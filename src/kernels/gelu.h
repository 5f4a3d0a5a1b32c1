// GELU, exact form: gelu(x) = 0.5 x (1 + erf(x / sqrt 2)), as Hugging Face's
// ViT ("gelu"). Used where the matmul epilogue does not fuse it.
//
// Forward:  out (N) = gelu(inp (N))
// Backward: dinp (N) = dout (N) * gelu'(inp)   assigned (=)
#pragma once

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

VIT_DECLARE_KERNEL(void, gelu_forward, const Context& ctx, Tensor out, const Tensor& inp)
VIT_DECLARE_KERNEL(void, gelu_backward, const Context& ctx, Tensor dinp, const Tensor& inp, const Tensor& dout)

inline void gelu_forward(const Context& ctx, Tensor out, const Tensor& inp) {
  VIT_DISPATCH(ctx, gelu_forward, ctx, out, inp);
}
inline void gelu_backward(const Context& ctx, Tensor dinp, const Tensor& inp, const Tensor& dout) {
  VIT_DISPATCH(ctx, gelu_backward, ctx, dinp, inp, dout);
}

}  // namespace vit::kernels
