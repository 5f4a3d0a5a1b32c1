// Attention backward for short sequences on Hopper: the short-sequence
// kernel's work (attention_short.h) with wgmma, tensor copies and 64-row
// tiles (attention_sm90a.cu, built for sm_90a only). Its outputs, the bias
// partials included, are bit for bit those of the mma.sync kernel; at
// ViT-B/16 on one H200 it takes ~18% less time (PERF_NOTES.md).
// short_attention_backward calls it where it fits and
// GpuHandles::attention_backward_wgmma allows.
//
// Included by attention_short.cu only (CUDA builds).
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
// Throws when the shape does not fit.
void sm90a_attention_backward(GpuHandles& h, DType dt, int64_t B, int64_t T, int64_t NH, void* dqkv, const void* qkv,
                              const void* out, const void* dout, const float* stats, float scale,
                              float* bias_partial = nullptr);

}  // namespace vit::kernels
