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
// num_classes may differ (head re-initialised with `seed`). Every tensor
// read must have the shape transformers gives it (a transposed weight has
// the right element count but is refused, naming the tensor and both
// shapes) and only finite values (NaN or Inf refused, naming the tensor).
HfImport load_hf_vit(const std::string& path, const model::ViTConfig& cfg, uint64_t seed);

// The ViTConfig a checkpoint folder describes (for `vit_hpc predict`).
// UserError naming config.json and the field for sizes vit_hpc cannot run
// (not positive, num_attention_heads not dividing hidden_size, patch_size not
// dividing image_size).
model::ViTConfig read_hf_config(const std::string& path, std::vector<std::string>* class_names = nullptr);

// Before training: can an export be written to `dir`? UserError when `dir`
// is a file, is not writable, already holds an export (model.safetensors or
// config.json) and `overwrite` is false, or when it does not exist and its
// parent folder is missing or not writable.
void check_export_destination(const std::string& dir, bool overwrite);

// Writes <dir>/model.safetensors and <dir>/config.json (creating `dir` and
// its parents). Both are written under temporary names first and renamed
// into place only once both are complete, so a failure (a full disk) leaves
// an earlier export in `dir` whole. UserError naming the file on failure.
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
