// Attention backward for short sequences, one thread block per (sample,
// head): the project's own kernel beside cuDNN's (attention_short.cu).
//
// At ViT lengths (197 tokens) a whole head fits in shared memory: Q, K, V,
// dO (T x 64 each) and the T x T gradient of the scores. The block computes
// dV and dK with each warp owning 16 keys, stores dS there, then dQ with
// each warp owning 16 queries: no atomics, no workspace, a fixed order of
// every sum, so reruns give the same bits. Tiles are 16 rows, so 197 tokens
// run as 208 (flash kernels with 64- or 128-row tiles run 256). On a Hopper
// GPU short_attention_backward runs the wgmma form instead
// (attention_sm90a.h: the same bits; GpuHandles::attention_backward_wgmma).
//
// Included by attention.cu only (CUDA builds).
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "kernels/gpu_context.h"

namespace vit::kernels {

// Whether the kernel runs this shape on h's GPU: bf16/fp16, head size 64,
// T at most 224, compute capability 8.0 or newer, enough shared memory.
// `why` (optional) receives the reason when not.
bool short_attention_backward_fits(const GpuHandles& h, DType dt, int64_t T, int64_t HS, std::string* why = nullptr);

// dqkv (B, T, 3C) assigned from qkv (B, T, 3C) (dqkv may be qkv: in place),
// out and dout (B, T, C) and
// stats (B, NH, T) fp32: the natural log-sum-exp of each scaled score row,
// as cuDNN's SDPA forward writes it. Every pointer 16-byte aligned.
// Throws when the shape does not fit (short_attention_backward_fits).
// bias_partial (optional, fp32 (B, 3C)): row b gets the column sums of
// sample b's rows of dqkv as stored; summed over the rows (fold_into)
// they are the QKV projection's bias gradient.
void short_attention_backward(GpuHandles& h, DType dt, int64_t B, int64_t T, int64_t NH, int64_t HS, void* dqkv,
                              const void* qkv, const void* out, const void* dout, const float* stats, float scale,
                              float* bias_partial = nullptr);

}  // namespace vit::kernels
