// LayerNorm over the last dimension, statistics in fp32.
//
// Forward:  out (M, C) = (inp - mean) * rstd * weight (C) + bias (C)
//           mean (M), rstd (M) fp32 are saved for the backward pass.
// Residual + LayerNorm: sum (M, C) = a + b (rounded to the storage type),
//           then out = LayerNorm(sum) as above: the same bits as residual_add
//           followed by layernorm_forward, with the sum read once. sum must
//           not alias a, b or out.
// Backward: dinp (M, C)   += ...   accumulated: in a pre-norm block the input
//                                  gradient already holds the residual path
//           dweight, dbias (C) +=  accumulated (fp32 master gradients); assigned
//                                  (=) with accumulate = false (dinp still +=)
//
// Dtypes: inp, out, dout, dinp, weight, bias in the compute dtype; mean, rstd,
// dweight, dbias fp32.
#pragma once

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

VIT_DECLARE_KERNEL(void, layernorm_forward, const Context& ctx, Tensor out, Tensor mean, Tensor rstd,
                   const Tensor& inp, const Tensor& weight, const Tensor& bias, float eps)
VIT_DECLARE_KERNEL(void, residual_layernorm_forward, const Context& ctx, Tensor sum, Tensor out, Tensor mean,
                   Tensor rstd, const Tensor& a, const Tensor& b, const Tensor& weight, const Tensor& bias,
                   float eps)
VIT_DECLARE_KERNEL(void, layernorm_backward, const Context& ctx, Tensor dinp, Tensor dweight, Tensor dbias,
                   const Tensor& dout, const Tensor& inp, const Tensor& weight, const Tensor& mean,
                   const Tensor& rstd, bool accumulate = true, Tensor dinp_colsum = Tensor(),
                   bool colsum_accumulate = true)

inline void layernorm_forward(const Context& ctx, Tensor out, Tensor mean, Tensor rstd, const Tensor& inp,
                              const Tensor& weight, const Tensor& bias, float eps) {
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(out, mean, rstd, inp, weight, bias), layernorm_forward, ctx, out, mean, rstd,
                     inp, weight, bias, eps);
}
inline void residual_layernorm_forward(const Context& ctx, Tensor sum, Tensor out, Tensor mean, Tensor rstd,
                                       const Tensor& a, const Tensor& b, const Tensor& weight, const Tensor& bias,
                                       float eps) {
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(sum, out, mean, rstd, a, b, weight, bias), residual_layernorm_forward, ctx, sum,
                     out, mean, rstd, a, b, weight, bias, eps);
}
// dinp_colsum (optional, fp32 (C)): (+)= (= when !colsum_accumulate) the
// column sums of dinp after the +=, as stored: the bias gradient of a linear
// layer whose output gradient dinp is, without another pass over it where
// the kernel can fuse it (layernorm.cu).
inline void layernorm_backward(const Context& ctx, Tensor dinp, Tensor dweight, Tensor dbias, const Tensor& dout,
                               const Tensor& inp, const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                               bool accumulate = true, Tensor dinp_colsum = Tensor(), bool colsum_accumulate = true) {
  // dinp is read and written (+=); the parameter gradients (C values) are left out.
  VIT_DISPATCH_BYTES(ctx, tensor_bytes(dinp, dinp, dout, inp, weight, mean, rstd), layernorm_backward, ctx, dinp,
                     dweight, dbias, dout, inp, weight, mean, rstd, accumulate, dinp_colsum, colsum_accumulate);
}

}  // namespace vit::kernels
