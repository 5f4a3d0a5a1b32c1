// GELU, exact form: gelu(x) = 0.5 x (1 + erf(x / sqrt 2)), as Hugging Face's
// ViT ("gelu"). Used where the matmul epilogue does not fuse it.
//
// Forward:  out (N) = gelu(inp (N))
// Backward: dinp (N) = dout (N) * gelu'(inp)   assigned (=)
// Backward with recompute (the model's train.recompute_gelu: the forward's
//   GELU output was not kept): the same dinp, and out (N) = gelu(inp) again,
//   bit for bit the forward's value, from one read of inp and dout. out may
//   be dout itself (each element of dout is read before its out is written);
//   dinp must be neither.
// In both, dinp may be inp itself: each element of inp is read before its
//   dinp is written (the model writes GELU's input gradient over the fc1
//   output it was computed from, which nothing needs after).
// Both backwards optionally make the bias gradient of the linear layer whose
//   output went into the GELU (fc1): with dbias defined (fp32, C elements,
//   C dividing the element count), dbias (C) (+)= the column sums of dinp
//   viewed as (N / C, C) rows, as stored (rounded to the storage type: the
//   values the weight-gradient GEMM reads); = when !accumulate. The GPU sums
//   while dinp is written, instead of a pass over dinp of its own.
#pragma once

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

VIT_DECLARE_KERNEL(void, gelu_forward, const Context& ctx, Tensor out, const Tensor& inp)
VIT_DECLARE_KERNEL(void, gelu_backward, const Context& ctx, Tensor dinp, const Tensor& inp, const Tensor& dout,
                   Tensor dbias = Tensor(), bool accumulate = true)
VIT_DECLARE_KERNEL(void, gelu_backward_recompute, const Context& ctx, Tensor dinp, Tensor out, const Tensor& inp,
                   const Tensor& dout, Tensor dbias = Tensor(), bool accumulate = true)

inline void gelu_forward(const Context& ctx, Tensor out, const Tensor& inp) {
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(out, inp), gelu_forward, ctx, out, inp);
}
inline void gelu_backward(const Context& ctx, Tensor dinp, const Tensor& inp, const Tensor& dout,
                          Tensor dbias = Tensor(), bool accumulate = true) {
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(dinp, inp, dout), gelu_backward, ctx, dinp, inp, dout, dbias, accumulate);
}
inline void gelu_backward_recompute(const Context& ctx, Tensor dinp, Tensor out, const Tensor& inp,
                                    const Tensor& dout, Tensor dbias = Tensor(), bool accumulate = true) {
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(dinp, out, inp, dout), gelu_backward_recompute, ctx, dinp, out, inp, dout,
                     dbias, accumulate);
}

}  // namespace vit::kernels
