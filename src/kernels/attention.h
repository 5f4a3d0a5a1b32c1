// Multi-head self-attention core (non-causal), after the QKV projection.
//
// qkv (B, T, 3C) holds [q | k | v] along the last dimension; head h of each
// occupies channels h*HS .. h*HS+HS-1 (HS = C / NH), the layout that
// Hugging Face's ViT gets from reshaping each projection to (B, T, NH, HS).
//
// Forward:  out (B, T, C): per head softmax(q k^T / sqrt(HS)) v, heads
//           concatenated back along C.
//           aux: what the backward pass needs, attention_aux_bytes() long.
//             CPU and the cuBLAS path: probabilities (B, NH, T, T)
//             cuDNN fused path: softmax statistics (B, NH, T) fp32
// Backward: dqkv (B, T, 3C) assigned (=) from dout (B, T, C), qkv, out, aux.
//
// `impl` picks the GPU path (cuDNN's fused SDPA through the graph API, or
// batched cuBLAS GEMMs plus a softmax kernel); the CPU ignores it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

enum class AttentionImpl { CuDNN = 0, Cublas = 1 };

// Bytes of `aux` for this device, path, compute dtype and shape.
size_t attention_aux_bytes(Device device, AttentionImpl impl, DType compute, int64_t B, int64_t T, int64_t NH);

VIT_DECLARE_KERNEL(void, attention_forward, const Context& ctx, Tensor out, Tensor aux, const Tensor& qkv, int NH,
                   AttentionImpl impl)
VIT_DECLARE_KERNEL(void, attention_backward, const Context& ctx, Tensor dqkv, const Tensor& dout, const Tensor& qkv,
                   const Tensor& out, const Tensor& aux, int NH, AttentionImpl impl)

inline void attention_forward(const Context& ctx, Tensor out, Tensor aux, const Tensor& qkv, int NH,
                              AttentionImpl impl) {
  VIT_DISPATCH(ctx, attention_forward, ctx, out, aux, qkv, NH, impl);
}
inline void attention_backward(const Context& ctx, Tensor dqkv, const Tensor& dout, const Tensor& qkv,
                               const Tensor& out, const Tensor& aux, int NH, AttentionImpl impl) {
  VIT_DISPATCH(ctx, attention_backward, ctx, dqkv, dout, qkv, out, aux, NH, impl);
}

}  // namespace vit::kernels
