#include "model/params.h"

#include <cmath>

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

ParamLayout::ParamLayout(const ViTConfig& cfg) {
  cfg.validate();
  const int64_t C = cfg.hidden;
  patch_w = add("patch_embed.weight", {C, cfg.patch_dim()}, Init::TruncNormal);
  patch_b = add("patch_embed.bias", {C}, Init::Zeros);
  cls_token = add("cls_token", {C}, Init::TruncNormal);
  pos_embed = add("pos_embed", {cfg.tokens(), C}, Init::TruncNormal);
  for (int l = 0; l < cfg.depth; ++l) {
    const std::string p = "blocks." + std::to_string(l) + ".";
    BlockParams b{};
    b.ln1_w = add(p + "ln1.weight", {C}, Init::Ones);
    b.ln1_b = add(p + "ln1.bias", {C}, Init::Zeros);
    b.qkv_w = add(p + "attn.qkv.weight", {3 * C, C}, Init::TruncNormal);
    b.qkv_b = add(p + "attn.qkv.bias", {3 * C}, Init::Zeros);
    b.proj_w = add(p + "attn.proj.weight", {C, C}, Init::TruncNormal);
    b.proj_b = add(p + "attn.proj.bias", {C}, Init::Zeros);
    b.ln2_w = add(p + "ln2.weight", {C}, Init::Ones);
    b.ln2_b = add(p + "ln2.bias", {C}, Init::Zeros);
    b.fc1_w = add(p + "mlp.fc1.weight", {cfg.mlp_dim, C}, Init::TruncNormal);
    b.fc1_b = add(p + "mlp.fc1.bias", {cfg.mlp_dim}, Init::Zeros);
    b.fc2_w = add(p + "mlp.fc2.weight", {C, cfg.mlp_dim}, Init::TruncNormal);
    b.fc2_b = add(p + "mlp.fc2.bias", {C}, Init::Zeros);
    blocks.push_back(b);
  }
  norm_w = add("norm.weight", {C}, Init::Ones);
  norm_b = add("norm.bias", {C}, Init::Zeros);
  head_w = add("head.weight", {cfg.num_classes, C}, Init::TruncNormal);
  head_b = add("head.bias", {cfg.num_classes}, Init::Zeros);
}

int ParamLayout::add(const std::string& name, std::vector<int64_t> shape, Init init) {
  ParamInfo p;
  p.name = name;
  p.numel = 1;
  for (int64_t s : shape) p.numel *= s;
  p.shape = std::move(shape);
  p.offset = total_;
  p.init = init;
  total_ += p.numel;
  params_.push_back(std::move(p));
  return static_cast<int>(params_.size()) - 1;
}

int ParamLayout::index_of(const std::string& name) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].name == name) return static_cast<int>(i);
  }
  VIT_THROW("no parameter named '", name, "'");
}

std::pair<int64_t, int64_t> ParamLayout::block_range(int l) const {
  const BlockParams& b = blocks.at(static_cast<size_t>(l));
  return {params_[b.ln1_w].offset, params_[b.fc2_b].offset + params_[b.fc2_b].numel};
}

std::pair<int64_t, int64_t> ParamLayout::embed_range() const {
  return {0, params_[pos_embed].offset + params_[pos_embed].numel};
}

std::pair<int64_t, int64_t> ParamLayout::head_range() const { return {params_[norm_w].offset, total_}; }

void init_params(const ParamLayout& layout, float init_std, uint64_t seed, float* flat) {
  const auto& ps = layout.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    const ParamInfo& p = ps[i];
    float* dst = flat + p.offset;
    switch (p.init) {
      case Init::Zeros:
        for (int64_t j = 0; j < p.numel; ++j) dst[j] = 0.0f;
        break;
      case Init::Ones:
        for (int64_t j = 0; j < p.numel; ++j) dst[j] = 1.0f;
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
