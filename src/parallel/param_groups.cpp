#include "parallel/param_groups.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "core/error.h"

namespace vit::parallel {

int layer_id(const model::ParamInfo& p, int depth) {
  const std::string& n = p.name;
  if (n.rfind("blocks.", 0) == 0) return std::atoi(n.c_str() + 7) + 1;
  if (n.rfind("norm.", 0) == 0 || n.rfind("head.", 0) == 0) return depth + 1;
  return 0;  // patch_embed.*, cls_token, pos_embed
}

bool takes_weight_decay(const model::ParamInfo& p) {
  return p.global_shape.size() >= 2 && p.name != "pos_embed";
}

std::vector<ParamMultipliers> param_multipliers(const model::ParamLayout& layout, const ParamGroupOptions& opts) {
  VIT_CHECK(opts.layer_decay > 0.0f && opts.layer_decay <= 1.0f, "layer_decay ", opts.layer_decay,
            " is outside (0, 1]");
  const int L = layout.config().depth;
  std::vector<ParamMultipliers> out;
  out.reserve(layout.params().size());
  for (const model::ParamInfo& p : layout.params()) {
    ParamMultipliers m;
    if (opts.layer_decay != 1.0f) {
      m.lr = static_cast<float>(std::pow(static_cast<double>(opts.layer_decay), L + 1 - layer_id(p, L)));
    }
    if (opts.no_decay_bias_norm && !takes_weight_decay(p)) m.wd = 0.0f;
    out.push_back(m);
  }
  return out;
}

namespace {
// n elements of a 1-D tensor from `offset` on (same dtype and device).
Tensor slice(const Tensor& t, int64_t offset, int64_t n) {
  if (!t.defined()) return t;
  return Tensor(static_cast<char*>(t.data) + offset * static_cast<int64_t>(dtype_size(t.dtype)), t.dtype, t.device,
                {n});
}
}  // namespace

std::vector<ShardView> split_views(const std::vector<ShardView>& views, const std::vector<int64_t>& view_begin,
                                   const std::vector<std::pair<int64_t, int64_t>>& param_range,
                                   const std::vector<ParamMultipliers>& mult) {
  VIT_CHECK(view_begin.size() == views.size(), "split_views: ", view_begin.size(), " starts for ", views.size(),
            " views");
  VIT_CHECK(param_range.size() == mult.size(), "split_views: ", param_range.size(), " ranges for ", mult.size(),
            " multipliers");
  // Parameters by start, to walk each view once.
  std::vector<size_t> order(param_range.size());
  for (size_t j = 0; j < order.size(); ++j) order[j] = j;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return param_range[a].first < param_range[b].first; });

  std::vector<ShardView> out;
  for (size_t i = 0; i < views.size(); ++i) {
    const ShardView& v = views[i];
    const int64_t n = v.master.numel(), begin = view_begin[i], end = begin + n;
    if (n == 0) {
      out.push_back(v);
      continue;
    }
    // Boundaries inside (begin, end) and the multipliers of each piece.
    std::vector<std::pair<int64_t, ParamMultipliers>> pieces;  // (start, multipliers)
    int64_t at = begin;
    auto add_piece = [&](int64_t start, const ParamMultipliers& m) {
      if (!pieces.empty() && pieces.back().second == m) return;  // merged with its neighbour
      pieces.emplace_back(start, m);
    };
    for (size_t j : order) {
      const int64_t pb = std::max(param_range[j].first, begin), pe = std::min(param_range[j].second, end);
      if (pb >= pe) continue;
      if (pb > at) add_piece(at, ParamMultipliers{});  // a gap: padding
      add_piece(pb, mult[j]);
      at = pe;
    }
    if (at < end) add_piece(at, ParamMultipliers{});
    for (size_t p = 0; p < pieces.size(); ++p) {
      const int64_t start = pieces[p].first, stop = p + 1 < pieces.size() ? pieces[p + 1].first : end;
      const int64_t off = start - begin, len = stop - start;
      ShardView s;
      s.master = slice(v.master, off, len);
      s.m = slice(v.m, off, len);
      s.v = slice(v.v, off, len);
      s.grad = slice(v.grad, off, len);
      s.lowp = slice(v.lowp, off, len);
      s.lr_mult = v.lr_mult * pieces[p].second.lr;
      s.wd_mult = v.wd_mult * pieces[p].second.wd;
      out.push_back(s);
    }
  }
  return out;
}

std::vector<ShardView> split_views_by_param(const std::vector<ShardView>& views, const std::vector<int64_t>& view_begin,
                                            const model::ParamLayout& layout,
                                            const std::vector<int64_t>& padded_offset, const ParamGroupOptions& opts) {
  const auto& ps = layout.params();
  VIT_CHECK(padded_offset.size() == ps.size(), "split_views_by_param: ", padded_offset.size(), " offsets for ",
            ps.size(), " parameters");
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (size_t i = 0; i < ps.size(); ++i) ranges.emplace_back(padded_offset[i], padded_offset[i] + ps[i].numel);
  return split_views(views, view_begin, ranges, param_multipliers(layout, opts));
}

}  // namespace vit::parallel
