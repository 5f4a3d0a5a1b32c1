// Per-parameter optimizer settings: layer-wise learning-rate decay and the
// parameters that take no weight decay, as timm and BEiT define them; and
// the split of a plugin's shard views so each piece has one setting.
//
// Layer ids: 0 for the embeddings (patch embedding, class token, position
// embeddings), l + 1 for block l, L + 1 for the final LayerNorm and the head.
// With layer_decay d the lr multiplier of layer id i is d^(L + 1 - i): the
// head trains at the full lr, block L-1 at d times it, ..., the embeddings at
// d^(L+1). Fine-tuning a pretrained ViT uses d around 0.65-0.75.
// no_decay_bias_norm: every 1-D parameter (biases, LayerNorm weights and
// biases, the class token) and the position embeddings get weight decay 0;
// the patch embedding and the other weight matrices keep it (timm's
// param_groups_weight_decay with ViT's no_weight_decay() names). The
// original example decays everything, which stays the default.
//
// Splitting: a plugin's ShardViews are runs of a flat index space (the
// padded buffers of a data-parallel plugin, a chunk of gemini's) that may
// span many parameters. split_views() cuts each at the boundaries of the
// parameters it overlaps and gives each piece its parameter's multipliers
// (StepFinisher applies them per view); pieces that belong to no parameter
// (padding) keep 1; neighbouring pieces with equal multipliers stay one view.
// With the options off it returns the views unchanged.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "model/params.h"
#include "parallel/step_finisher.h"

namespace vit::parallel {

struct ParamGroupOptions {
  float layer_decay = 1.0f;         // 1 = off
  bool no_decay_bias_norm = false;  // false = decay every parameter (the original example)
  bool active() const { return layer_decay != 1.0f || no_decay_bias_norm; }
};

struct ParamMultipliers {
  float lr = 1.0f, wd = 1.0f;
  bool operator==(const ParamMultipliers& o) const { return lr == o.lr && wd == o.wd; }
};

// 0 (embeddings), l + 1 (block l) or L + 1 (norm, head), from the parameter's name.
int layer_id(const model::ParamInfo& p, int depth);
// Whether weight decay applies to p under no_decay_bias_norm.
bool takes_weight_decay(const model::ParamInfo& p);
// One entry per parameter of `layout` (its ParamLayout index).
std::vector<ParamMultipliers> param_multipliers(const model::ParamLayout& layout, const ParamGroupOptions& opts);

// view_begin[i]: where views[i] starts in the index space; param_range[j] =
// [begin, end) of parameter j in the same space (any order, not
// overlapping); mult[j] its multipliers.
std::vector<ShardView> split_views(const std::vector<ShardView>& views, const std::vector<int64_t>& view_begin,
                                   const std::vector<std::pair<int64_t, int64_t>>& param_range,
                                   const std::vector<ParamMultipliers>& mult);
// split_views over the parameters of `layout` with the multipliers of
// `opts`, parameter i at [padded_offset[i], padded_offset[i] + numel) of the
// views' index space (a plugin's padded buckets).
std::vector<ShardView> split_views_by_param(const std::vector<ShardView>& views, const std::vector<int64_t>& view_begin,
                                            const model::ParamLayout& layout,
                                            const std::vector<int64_t>& padded_offset, const ParamGroupOptions& opts);

}  // namespace vit::parallel
