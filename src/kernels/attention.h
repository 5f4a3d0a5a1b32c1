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
//           Optionally the QKV projection's bias gradient: with dbias
//           defined (fp32, 3C), dbias (+)= the column sums of dqkv over the
//           B*T rows, as stored (the values the weight-gradient GEMM reads);
//           = when !accumulate. The GPU's short-sequence kernel sums them
//           while it writes dqkv; the other paths sum dqkv after.
//
// `impl` picks the GPU path (cuDNN's fused SDPA through the graph API, or
// batched cuBLAS GEMMs plus a softmax kernel, on the heads in place or on a
// zero-padded copy of them); the CPU ignores it. resolve_attention() says
// which path a request runs for a given shape; the GPU functions apply the
// same rule themselves, so every head size runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace vit::kernels {

enum class AttentionImpl {
  CuDNN = 0,         // fused flash attention (bf16/fp16, HS a multiple of 8 up to 256)
  Cublas = 1,        // batched GEMMs on the heads in place (rows of 16-byte multiples)
  CublasPadded = 2,  // the same on a copy of the heads zero-padded to 16 bytes: any head size
};
const char* attention_impl_name(AttentionImpl impl);

// The path a request runs on `device` for compute dtype `dt`, hidden size C
// and NH heads. The CPU has one path (the request is returned). On the GPU:
// CuDNN runs only bf16/fp16 with a head size HS = C / NH that is a multiple
// of 8 and at most 256 (cuDNN's fused kernels); otherwise the cuBLAS path.
// The cuBLAS path needs HS and C times the element size to be multiples of
// 16 bytes; otherwise CublasPadded (the same arithmetic on padded heads,
// with extra copies and scratch). CublasPadded asked for is kept. `why` (optional) receives a sentence when
// the result differs from the request, empty otherwise.
AttentionImpl resolve_attention(Device device, AttentionImpl requested, DType dt, int64_t C, int64_t NH,
                                std::string* why = nullptr);

// Whether cuDNN builds its fused forward and backward plans for this shape
// on ctx's GPU (the plans are cached for later use). False, with cuDNN's
// reasons in `why`, when it does not, and always false on the CPU or in a
// build without CUDA.
bool cudnn_attention_available(const Context& ctx, DType dt, int64_t B, int64_t T, int64_t C, int64_t NH,
                               std::string* why = nullptr);

// Whether attention_backward may write dqkv over qkv (dqkv.data ==
// qkv.data) on ctx for this request and shape: where vit_hpc's
// short-sequence kernel runs the backward (attention_short.h), whose blocks
// read their head's Q, K and V before they write any of its gradients and
// touch no other head's. False on the CPU, on the other paths and in a build
// without CUDA; attention_backward refuses dqkv over qkv there.
bool attention_backward_in_place(const Context& ctx, AttentionImpl impl, DType dt, int64_t T, int64_t C, int64_t NH);

// Bytes of `aux` for this device, path (as resolved), compute dtype and shape.
size_t attention_aux_bytes(Device device, AttentionImpl impl, DType compute, int64_t B, int64_t T, int64_t NH);

VIT_DECLARE_KERNEL(void, attention_forward, const Context& ctx, Tensor out, Tensor aux, const Tensor& qkv, int NH,
                   AttentionImpl impl)
VIT_DECLARE_KERNEL(void, attention_backward, const Context& ctx, Tensor dqkv, const Tensor& dout, const Tensor& qkv,
                   const Tensor& out, const Tensor& aux, int NH, AttentionImpl impl, Tensor dbias = Tensor(),
                   bool accumulate = true)

inline void attention_forward(const Context& ctx, Tensor out, Tensor aux, const Tensor& qkv, int NH,
                              AttentionImpl impl) {
  VIT_DISPATCH(ctx, attention_forward, ctx, out, aux, qkv, NH, impl);
}
inline void attention_backward(const Context& ctx, Tensor dqkv, const Tensor& dout, const Tensor& qkv,
                               const Tensor& out, const Tensor& aux, int NH, AttentionImpl impl,
                               Tensor dbias = Tensor(), bool accumulate = true) {
  VIT_DISPATCH(ctx, attention_backward, ctx, dqkv, dout, qkv, out, aux, NH, impl, dbias, accumulate);
}

}  // namespace vit::kernels
