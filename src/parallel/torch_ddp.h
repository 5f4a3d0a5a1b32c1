// torch_ddp and torch_ddp_fp16: plain data parallelism.
//
// Every rank holds the whole model, the fp32 master parameters and full
// AdamW states. Gradients live in one flat fp32 buffer; backward hands over
// finished ranges (head, block L-1, ..., block 0, embeddings) and, on the
// last micro-batch of a step, each bucket (~bucket_bytes of adjacent ranges)
// is all-reduced as soon as its last range is final: on the GPU on a
// separate communication stream ordered by events, so the reduction of late
// layers overlaps the backward of early ones. The loss gradient is already
// divided by the global batch, so the all-reduce sums.
//
// torch_ddp_fp16 is the same with a bf16 or fp16 compute copy of the
// parameters (refreshed by the AdamW kernel) and, for fp16, a loss scale:
// a step whose reduced gradients hold inf/NaN is skipped on every rank alike.
#pragma once

#include <memory>

#include "parallel/plugin.h"

namespace vit::parallel {

std::unique_ptr<Plugin> make_data_parallel(const PluginOptions& opts, const model::ViTConfig& cfg,
                                           const model::ComputeConfig& compute, int max_micro_batch,
                                           const PluginEnv& env);

}  // namespace vit::parallel
