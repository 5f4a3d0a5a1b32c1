// ViT sizes (DESIGN.md section 3). Defaults are ViT-B/16 on 224x224 images.
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "kernels/attention.h"

namespace vit::model {

struct ViTConfig {
  int image_size = 224;
  int patch_size = 16;
  int channels = 3;
  int hidden = 768;      // C
  int depth = 12;        // L
  int heads = 12;        // NH
  int mlp_dim = 3072;
  int num_classes = 3;   // K
  float layernorm_eps = 1e-12f;
  float init_std = 0.02f;

  int grid() const { return image_size / patch_size; }
  int num_patches() const { return grid() * grid(); }                   // NP
  int tokens() const { return num_patches() + 1; }                      // T (class token first)
  int patch_dim() const { return channels * patch_size * patch_size; }  // P
  int head_size() const { return hidden / heads; }                      // HS

  // Throws vit::Error when the sizes cannot form a ViT.
  void validate() const;
  // Parameters in the flat buffer.
  int64_t num_parameters() const;
  // Multiply-add FLOPs of one image's forward + backward (6 x params x tokens
  // for the matrices, plus the attention score and value products).
  double train_flops_per_image() const;
};

// How a model instance computes: the dtype of activations and compute weights,
// the attention path on the GPU, and whether blocks are recomputed in backward.
struct ComputeConfig {
  DType dtype = DType::F32;
  kernels::AttentionImpl attention = kernels::AttentionImpl::CuDNN;
  bool recompute = false;
};

}  // namespace vit::model
