// Hugging Face ViT checkpoints: model.safetensors + config.json of a
// transformers ViTForImageClassification (names under "vit." plus
// "classifier") or ViTModel (no prefix, no head; its pooler is ignored).
//
// Import maps HF's separate query/key/value projections onto the fused qkv
// weight (rows [q; k; v]) of our layout, the Conv2d patch weight
// (C, 3, ps, ps) onto (C, P) (the same bytes), and the (1, 1, C) / (1, T, C)
// embeddings onto (C) / (T, C). A head with another label count, or no head,
// is re-initialised and the caller is told so. Export writes the
// ViTForImageClassification form, which transformers loads unchanged.
#pragma once

#include <string>
#include <vector>

#include "model/config.h"

namespace vit::train {

struct HfImport {
  std::vector<float> params;             // our flat layout, fp32
  bool head_reinitialised = false;
  std::string note;                      // what was done, for the log
  std::vector<std::string> class_names;  // id2label of the checkpoint, in label order ("" where absent)
};

// `path`: a folder with config.json and model.safetensors, or the
// safetensors file itself (config.json beside it). The checkpoint's sizes
// must equal cfg's (UserError naming the file and the field otherwise);
// num_classes may differ (head re-initialised with `seed`).
HfImport load_hf_vit(const std::string& path, const model::ViTConfig& cfg, uint64_t seed);

// The ViTConfig a checkpoint folder describes (for `vit_hpc predict`).
model::ViTConfig read_hf_config(const std::string& path, std::vector<std::string>* class_names = nullptr);

// The dropout rates of a checkpoint's config.json (hidden_dropout_prob,
// attention_probs_dropout_prob; 0 where absent).
struct HfDropout {
  double hidden = 0.0, attention = 0.0;
};
HfDropout read_hf_dropout(const std::string& path);

// Writes <dir>/model.safetensors and <dir>/config.json (each atomically).
void export_hf_vit(const std::string& dir, const model::ViTConfig& cfg, const std::vector<float>& params,
                   const std::vector<std::string>& class_names);

}  // namespace vit::train
