// Attention for short sequences on Hopper (attention_sm90a.cu, built for
// sm_90a only), with wgmma, tensor copies and 64-row tiles.
//
// Backward: the short-sequence kernel's work (attention_short.h). Its
// outputs, the bias partials included, are bit for bit those of the
// mma.sync kernel; at ViT-B/16 on one H200 it takes 20-22% less time
// (PERF_NOTES.md). short_attention_backward calls it where it fits and
// GpuHandles::attention_backward_wgmma allows.
//
// Forward: out and the softmax statistics (natural-log sum of exponentials
// of the scaled scores, (B, NH, T) fp32: what cuDNN's fused forward writes
// and both backwards read). The keys run padded to a multiple of 16 (197 as
// 208, where cuDNN's flash kernel runs 256). Not cuDNN's bits: P is rounded
// to E unnormalised and O divided by the fp32 row sum after P V.
// attention_forward (attention.cu) calls it on the cuDNN path where it fits
// and GpuHandles::attention_forward_wgmma allows.
//
// Included by attention_short.cu and attention.cu only (CUDA builds).
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "kernels/gpu_context.h"

namespace vit::kernels {

// Whether the kernel runs this shape on h's GPU: compute capability 9.x,
// bf16/fp16, head size 64, 1 <= T <= 256, enough shared memory, the driver's
// tensor-map encoder found. `why` (optional) receives the reason when not.
bool sm90a_attention_backward_fits(const GpuHandles& h, DType dt, int64_t T, int64_t HS, std::string* why = nullptr);

// The arguments and results of short_attention_backward (head size 64).
// Throws when the shape does not fit. The grid is persistent, one block an
// SM, each block taking (sample, head) items in turn and loading the next
// one's tiles under the current one's last phases; max_blocks > 0 caps it
// (the tests use a few blocks, so that each runs many items; the bits do
// not depend on it).
void sm90a_attention_backward(GpuHandles& h, DType dt, int64_t B, int64_t T, int64_t NH, void* dqkv, const void* qkv,
                              const void* out, const void* dout, const float* stats, float scale,
                              float* bias_partial = nullptr, int64_t max_blocks = 0);

// Whether the forward runs this shape on h's GPU: compute capability 9.x,
// bf16/fp16, head size 64, 1 <= T <= 256, enough shared memory, the driver's
// tensor-map encoder found. `why` (optional) receives the reason when not.
bool sm90a_attention_forward_fits(const GpuHandles& h, DType dt, int64_t T, int64_t HS, std::string* why = nullptr);

// out (B, T, NH * 64) and stats (B, NH, T) from qkv (B, T, 3 NH 64), as
// attention_forward's cuDNN path. Throws when the shape does not fit. The
// grid is persistent, one block an SM, each block taking (sample, head)
// items in turn; max_blocks > 0 caps it (the tests use a few blocks, so that
// each runs many items through both of its shared-memory stages; the bits
// do not depend on it).
void sm90a_attention_forward(GpuHandles& h, DType dt, int64_t B, int64_t T, int64_t NH, void* out, const void* qkv,
                             float* stats, float scale, int64_t max_blocks = 0);

}  // namespace vit::kernels
