// The data-parallel plugins: torch_ddp, torch_ddp_fp16 and low_level_zero.
//
// One engine, three uses of the shared machinery (bucket_layout.h,
// grad_buckets.h, step_finisher.h, batch_stager.h):
//
//   plugin               gradients                optimizer state        parameters after the step
//   torch_ddp(_fp16)     all-reduced in buckets   whole model per rank   written by AdamW on every rank
//   low_level_zero 1     all-reduced in buckets   1/dp per rank (ZeRO-1) own part written, all-gathered
//   low_level_zero 2     reduce-scattered into    1/dp per rank          own part written, all-gathered
//                        a 1/dp shard (ZeRO-2)
//
// Buckets are reduced on a communication stream while backward goes on (on
// the last micro-batch of a step for all-reduce, every micro-batch for
// reduce-scatter); the parameter all-gather of a ZeRO step is queued at its
// end and the next forward waits for each bucket only when it reaches it.
// torch_ddp computes in fp32; torch_ddp_fp16 and low_level_zero in
// plugin.precision (bf16 or fp16 with fp32 master weights; fp16 with the
// loss scale the trainer passes, a step whose gradients hold inf/NaN skipped
// on every rank alike; low_level_zero also runs fp32).
#pragma once

#include <memory>

#include "parallel/plugin.h"

namespace vit::parallel {

std::unique_ptr<Plugin> make_data_parallel(const PluginOptions& opts, const model::ViTConfig& cfg,
                                           const model::ComputeConfig& compute, int max_micro_batch,
                                           const PluginEnv& env);

}  // namespace vit::parallel
