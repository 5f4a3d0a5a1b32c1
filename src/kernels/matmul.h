// Matrix products of the linear layers (nn.Linear: y = x W^T + b).
//
// Forward:  out (M, N) = inp (M, K) @ weight (N, K)^T + bias (N) [+ residual (M, N)]
//   With `pre_gelu` defined, the GELU epilogue is applied: pre_gelu (M, N)
//   keeps x W^T + b for the backward pass and out = gelu(pre_gelu) (exact
//   erf GELU, as Hugging Face's ViT).
//   With `residual` defined (not with pre_gelu; a buffer other than out), it
//   is added in the same pass: a transformer block's residual add. On the
//   CPU the bits of the product plus a separate residual_add; on the GPU the
//   sum is rounded once (the GEMM's epilogue reads residual as C, beta = 1).
// Backward: dinp (M, K)    = dout (M, N) @ weight (N, K)      assigned (=)
//           dweight (N, K) += dout^T @ inp                     accumulated (+=)
//           dbias (N)      += column sums of dout              accumulated (+=)
//   Parameter gradients accumulate so that gradient-accumulation micro-batches
//   add up in the one flat gradient buffer; the activation gradient is a fresh
//   value each time and is assigned. accumulate = false assigns dweight and
//   dbias instead (=): a plugin that skips zeroing the gradients before a
//   step's first micro-batch (the model's set_assign_grads). An undefined dinp / dbias is skipped;
//   an undefined dweight (then dbias undefined too) makes an input-gradient-
//   only call, which does not read inp (it may be undefined), so a layer's
//   two gradient GEMMs can run apart (the model's GELU recompute does).
//   dinp may be inp itself (both are M x K): the weight gradient reads inp
//   before dinp is written over it, so the model writes fc2's input gradient
//   over the GELU output that only fc2's weight gradient still needed.
//
// Dtypes: inp, weight, out, pre_gelu, dinp, dout share the compute dtype;
// dweight and dbias are always fp32 (master gradients); bias is the compute
// dtype. The CPU version is fp32 throughout (OpenBLAS sgemm).
#pragma once

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

VIT_DECLARE_KERNEL(void, matmul_forward, const Context& ctx, Tensor out, Tensor pre_gelu, const Tensor& inp,
                   const Tensor& weight, const Tensor& bias, const Tensor& residual = Tensor())
VIT_DECLARE_KERNEL(void, matmul_backward, const Context& ctx, Tensor dinp, Tensor dweight, Tensor dbias,
                   const Tensor& dout, const Tensor& inp, const Tensor& weight, bool accumulate = true)

inline void matmul_forward(const Context& ctx, Tensor out, Tensor pre_gelu, const Tensor& inp, const Tensor& weight,
                           const Tensor& bias, const Tensor& residual = Tensor()) {
  VIT_DISPATCH(ctx, matmul_forward, ctx, out, pre_gelu, inp, weight, bias, residual);
}
inline void matmul_backward(const Context& ctx, Tensor dinp, Tensor dweight, Tensor dbias, const Tensor& dout,
                            const Tensor& inp, const Tensor& weight, bool accumulate = true) {
  VIT_DISPATCH(ctx, matmul_backward, ctx, dinp, dweight, dbias, dout, inp, weight, accumulate);
}

}  // namespace vit::kernels
