#include "model/params.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace vit::model {

void ViTConfig::validate() const {
  VIT_CHECK(image_size > 0 && patch_size > 0 && image_size % patch_size == 0, "image_size ", image_size,
            " is not a multiple of patch_size ", patch_size);
  VIT_CHECK(hidden > 0 && heads > 0 && hidden % heads == 0, "hidden ", hidden, " is not a multiple of heads ",
            heads);
  VIT_CHECK(depth > 0 && mlp_dim > 0 && num_classes > 0 && channels > 0, "model sizes must be positive");
}

int64_t ViTConfig::num_parameters() const { return ParamLayout(*this).total(); }

double ViTConfig::train_flops_per_image() const {
  const double T = tokens();
  const double C = hidden;
  const double matrix_params = static_cast<double>(depth) * (4.0 * C * C + 2.0 * C * mlp_dim);
  const double patch = static_cast<double>(num_patches()) * patch_dim() * C;
  // Forward: 2 FLOPs per multiply-add; backward twice the forward.
  const double dense = 6.0 * (matrix_params * T + patch + C * num_classes);
  const double attention = 6.0 * 2.0 * depth * T * T * C;  // q k^T and p v
  return dense + attention;
}

const char* tp_split_name(TpSplit s) {
  switch (s) {
    case TpSplit::Replicated: return "replicated";
    case TpSplit::Column: return "column";
    case TpSplit::Row: return "row";
    case TpSplit::QkvColumn: return "qkv-column";
  }
  VIT_THROW("unknown TpSplit ", static_cast<int>(s));
}

std::string Segment::name() const {
  switch (kind) {
    case Embed: return "embeddings";
    case Block: return "block " + std::to_string(block);
    case Head: return "head";
  }
  VIT_THROW("unknown segment kind ", static_cast<int>(kind));
}

ShardSpec ShardSpec::stage(const ViTConfig& cfg, int stages, int stage, int tp_size, int tp_rank) {
  VIT_CHECK(stages >= 1 && stage >= 0 && stage < stages, "pipeline stage ", stage, " of ", stages);
  VIT_CHECK(cfg.depth % stages == 0, "depth ", cfg.depth, " is not divisible by ", stages, " pipeline stages");
  ShardSpec s;
  s.tp_size = tp_size;
  s.tp_rank = tp_rank;
  const int per = cfg.depth / stages;
  s.first_block = stage * per;
  s.num_blocks = per;
  s.embeddings = stage == 0;
  s.head = stage == stages - 1;
  return s;
}

namespace {

int64_t product(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::vector<int64_t> local_shape(const std::vector<int64_t>& g, TpSplit split, int tp) {
  std::vector<int64_t> s = g;
  switch (split) {
    case TpSplit::Replicated: break;
    case TpSplit::Column:
    case TpSplit::QkvColumn: s[0] /= tp; break;
    case TpSplit::Row: s[1] /= tp; break;
  }
  return s;
}

// Calls f(full_offset, local_offset, count) for each contiguous run of the
// slice of tensor p (global shape g) that rank r of tp holds.
template <typename F>
void for_each_run(const ParamInfo& p, int tp, int r, F&& f) {
  const std::vector<int64_t>& g = p.global_shape;
  const int64_t inner = g.size() > 1 ? product(std::vector<int64_t>(g.begin() + 1, g.end())) : 1;
  switch (p.split) {
    case TpSplit::Replicated:
      f(0, 0, p.numel);
      return;
    case TpSplit::Column: {
      const int64_t rows = g[0] / tp;
      f(r * rows * inner, 0, rows * inner);
      return;
    }
    case TpSplit::QkvColumn: {
      const int64_t part = g[0] / 3, rows = part / tp;
      for (int j = 0; j < 3; ++j) f((j * part + r * rows) * inner, j * rows * inner, rows * inner);
      return;
    }
    case TpSplit::Row: {
      const int64_t cols = g[1] / tp;
      for (int64_t i = 0; i < g[0]; ++i) f(i * g[1] + r * cols, i * cols, cols);
      return;
    }
  }
}

}  // namespace

ParamLayout::ParamLayout(const ViTConfig& cfg, const ShardSpec& shard) : cfg_(cfg), shard_(shard) {
  cfg.validate();
  const int tp = shard.tp_size;
  VIT_CHECK(tp >= 1 && shard.tp_rank >= 0 && shard.tp_rank < tp, "tensor-parallel rank ", shard.tp_rank, " of ", tp);
  VIT_CHECK(cfg.heads % tp == 0 && cfg.mlp_dim % tp == 0, "tensor parallelism over ", tp,
            " ranks needs heads (", cfg.heads, ") and mlp_dim (", cfg.mlp_dim, ") divisible by it");
  first_block_ = shard.first_block;
  end_block_ = shard.num_blocks < 0 ? cfg.depth : shard.first_block + shard.num_blocks;
  VIT_CHECK(first_block_ >= 0 && first_block_ <= end_block_ && end_block_ <= cfg.depth, "blocks [", first_block_,
            ", ", end_block_, ") of a model with ", cfg.depth);
  const int64_t C = cfg.hidden;
  const auto R = TpSplit::Replicated;
  const bool emb = shard.embeddings, hd = shard.head;
  patch_w = add("patch_embed.weight", {C, cfg.patch_dim()}, Init::TruncNormal, R, emb);
  patch_b = add("patch_embed.bias", {C}, Init::Zeros, R, emb);
  cls_token = add("cls_token", {C}, Init::TruncNormal, R, emb);
  pos_embed = add("pos_embed", {cfg.tokens(), C}, Init::TruncNormal, R, emb);
  blocks.resize(static_cast<size_t>(cfg.depth));
  for (int l = 0; l < cfg.depth; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    const bool held = l >= first_block_ && l < end_block_;
    BlockParams& b = blocks[static_cast<size_t>(l)];
    b.present = held;
    b.ln1_w = add(p + "ln1.weight", {C}, Init::Ones, R, held);
    b.ln1_b = add(p + "ln1.bias", {C}, Init::Zeros, R, held);
    b.qkv_w = add(p + "attn.qkv.weight", {3 * C, C}, Init::TruncNormal, TpSplit::QkvColumn, held);
    b.qkv_b = add(p + "attn.qkv.bias", {3 * C}, Init::Zeros, TpSplit::QkvColumn, held);
    b.proj_w = add(p + "attn.proj.weight", {C, C}, Init::TruncNormal, TpSplit::Row, held);
    b.proj_b = add(p + "attn.proj.bias", {C}, Init::Zeros, R, held);
    b.ln2_w = add(p + "ln2.weight", {C}, Init::Ones, R, held);
    b.ln2_b = add(p + "ln2.bias", {C}, Init::Zeros, R, held);
    b.fc1_w = add(p + "mlp.fc1.weight", {cfg.mlp_dim, C}, Init::TruncNormal, TpSplit::Column, held);
    b.fc1_b = add(p + "mlp.fc1.bias", {cfg.mlp_dim}, Init::Zeros, TpSplit::Column, held);
    b.fc2_w = add(p + "mlp.fc2.weight", {C, cfg.mlp_dim}, Init::TruncNormal, TpSplit::Row, held);
    b.fc2_b = add(p + "mlp.fc2.bias", {C}, Init::Zeros, R, held);
    if (!held) b = BlockParams();
  }
  norm_w = add("norm.weight", {C}, Init::Ones, R, hd);
  norm_b = add("norm.bias", {C}, Init::Zeros, R, hd);
  head_w = add("head.weight", {cfg.num_classes, C}, Init::TruncNormal, R, hd);
  head_b = add("head.bias", {cfg.num_classes}, Init::Zeros, R, hd);
}

int ParamLayout::add(const std::string& name, std::vector<int64_t> global_shape, Init init, TpSplit split,
                     bool held) {
  const int global_index = global_count_++;
  global_offsets_.push_back(global_total_);
  global_total_ += product(global_shape);
  if (!held) return -1;
  ParamInfo p;
  p.name = name;
  p.global_index = global_index;
  p.split = shard_.tp_size > 1 ? split : TpSplit::Replicated;
  p.shape = local_shape(global_shape, p.split, shard_.tp_size);
  p.global_shape = std::move(global_shape);
  p.numel = product(p.shape);
  p.offset = total_;
  p.init = init;
  total_ += p.numel;
  params_.push_back(std::move(p));
  return static_cast<int>(params_.size()) - 1;
}

int ParamLayout::find(const std::string& name) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

int ParamLayout::index_of(const std::string& name) const {
  const int i = find(name);
  if (i < 0) VIT_THROW("no parameter named '", name, "' in this layout");
  return i;
}

std::vector<Segment> ParamLayout::segments() const {
  std::vector<Segment> out;
  if (patch_w >= 0) out.push_back(Segment{Segment::Embed, -1});
  for (int l = first_block_; l < end_block_; ++l) out.push_back(Segment{Segment::Block, l});
  if (norm_w >= 0) out.push_back(Segment{Segment::Head, -1});
  return out;
}

std::pair<int64_t, int64_t> ParamLayout::range(const Segment& s) const {
  switch (s.kind) {
    case Segment::Embed: return embed_range();
    case Segment::Block: return block_range(s.block);
    case Segment::Head: return head_range();
  }
  VIT_THROW("unknown segment");
}

std::pair<int64_t, int64_t> ParamLayout::block_range(int l) const {
  VIT_CHECK(has_block(l), "this layout does not hold block ", l);
  const BlockParams& b = blocks[static_cast<size_t>(l)];
  return {params_[b.ln1_w].offset, params_[b.fc2_b].offset + params_[b.fc2_b].numel};
}

std::pair<int64_t, int64_t> ParamLayout::embed_range() const {
  VIT_CHECK(pos_embed >= 0, "this layout does not hold the embeddings");
  return {0, params_[pos_embed].offset + params_[pos_embed].numel};
}

std::pair<int64_t, int64_t> ParamLayout::head_range() const {
  VIT_CHECK(norm_w >= 0, "this layout does not hold the head");
  return {params_[norm_w].offset, total_};
}

void ParamLayout::slice_of(int index, const float* full, float* local) const {
  const ParamInfo& p = (*this)[index];
  for_each_run(p, shard_.tp_size, shard_.tp_rank, [&](int64_t f, int64_t l, int64_t n) {
    std::memcpy(local + l, full + f, static_cast<size_t>(n) * sizeof(float));
  });
}

void ParamLayout::place_slice(int index, const float* local, float* full) const {
  const ParamInfo& p = (*this)[index];
  for_each_run(p, shard_.tp_size, shard_.tp_rank, [&](int64_t f, int64_t l, int64_t n) {
    std::memcpy(full + f, local + l, static_cast<size_t>(n) * sizeof(float));
  });
}

std::vector<ParamLayout::SliceRun> ParamLayout::slice_runs(int index) const {
  std::vector<SliceRun> out;
  for_each_run((*this)[index], shard_.tp_size, shard_.tp_rank,
               [&](int64_t f, int64_t l, int64_t n) { out.push_back(SliceRun{f, l, n}); });
  return out;
}

void ParamLayout::extract_local(const float* full_flat, float* local_flat) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamInfo& p = params_[i];
    slice_of(static_cast<int>(i), full_flat + global_offsets_[static_cast<size_t>(p.global_index)],
             local_flat + p.offset);
  }
}

void ParamLayout::insert_local(const float* local_flat, float* full_flat) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamInfo& p = params_[i];
    place_slice(static_cast<int>(i), local_flat + p.offset,
                full_flat + global_offsets_[static_cast<size_t>(p.global_index)]);
  }
}

void init_params(const ParamLayout& layout, float init_std, uint64_t seed, float* flat) {
  VIT_CHECK(layout.shard().is_full(), "init_params fills the unsharded layout; shard it with extract_local");
  const auto& ps = layout.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    const ParamInfo& p = ps[i];
    float* dst = flat + p.offset;
    switch (p.init) {
      case Init::Zeros:
        std::fill(dst, dst + p.numel, 0.0f);
        break;
      case Init::Ones:
        std::fill(dst, dst + p.numel, 1.0f);
        break;
      case Init::TruncNormal: {
        Rng rng(mix_seed(seed, 0x9a7a, i));
        const double std = init_std;
        for (int64_t j = 0; j < p.numel; ++j) dst[j] = static_cast<float>(rng.trunc_normal(std, -2 * std, 2 * std));
        break;
      }
    }
  }
}

}  // namespace vit::model
