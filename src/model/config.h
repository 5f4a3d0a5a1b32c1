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

// Training-time regularisation; all of it is the identity in evaluation
// (ViTModel::forward) and off by default.
//   drop_path:       stochastic depth. Block l drops each of its two branches
//                    (attention, MLP) for a whole sample with probability
//                    drop_path * l / (L - 1) (0 for the first block, the full
//                    rate for the last: timm's linear rule), survivors scaled
//                    by 1 / keep.
//   hidden_dropout:  dropout on the embeddings' output and on each branch's
//                    output before its residual add (where transformers' ViT
//                    applies hidden_dropout_prob).
//   label_smoothing: eps of the soft target (kernels/cross_entropy.h).
//   seed:            masks of forward_backward calls that were given no noise
//                    key (ViTModel::set_train_extras).
struct Regularization {
  float drop_path = 0.0f;
  float hidden_dropout = 0.0f;
  float label_smoothing = 0.0f;
  uint64_t seed = 0;

  bool any_noise() const { return drop_path > 0.0f || hidden_dropout > 0.0f; }
  // Drop probability of block l's branches in a model of `depth` blocks.
  float drop_path_rate(int l, int depth) const {
    return depth > 1 ? drop_path * static_cast<float>(l) / static_cast<float>(depth - 1) : 0.0f;
  }
};

// How a model instance computes: the dtype of activations and compute weights,
// the attention path on the GPU, whether blocks (or their GELU outputs) are
// recomputed in backward, and the training-time regularisation (every plugin
// passes it to its model).
struct ComputeConfig {
  DType dtype = DType::F32;
  kernels::AttentionImpl attention = kernels::AttentionImpl::CuDNN;
  bool recompute = false;
  // Keep only fc1's output before GELU and make the GELU output again during
  // backward, in the GELU backward pass (less memory: (B, T, mlp) per block).
  bool recompute_gelu = false;
  // Keep no LayerNorm outputs of the blocks (LN1's and LN2's): the forward
  // writes them to one shared buffer and the backward makes them again,
  // from the kept inputs and statistics, right before the weight gradients
  // that read them (less memory: 2 x (B, T, hidden) per block).
  bool recompute_norm = false;
  Regularization reg;
};

}  // namespace vit::model
