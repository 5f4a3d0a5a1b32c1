// The parameter layout: every weight of the ViT as a named view into one flat
// buffer.
//
// Plugins shard, bucket, gather and offload the flat buffers (parameters,
// gradients, optimizer states all share this layout); the model only asks for
// views by index. Order: embeddings, then block 0..L-1, then the final norm
// and head, so each block is one contiguous range (a pipeline stage or a
// gradient bucket is a slice of the buffer), and backward produces gradients
// from the end of the buffer towards its start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/config.h"

namespace vit::model {

enum class Init : uint8_t { TruncNormal, Zeros, Ones };

struct ParamInfo {
  std::string name;             // e.g. "blocks.3.attn.qkv.weight"
  std::vector<int64_t> shape;   // row-major
  int64_t offset = 0;           // elements from the start of the flat buffer
  int64_t numel = 0;
  Init init = Init::Zeros;
};

// Indices of one block's parameters inside ParamLayout::params().
struct BlockParams {
  int ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

class ParamLayout {
 public:
  explicit ParamLayout(const ViTConfig& cfg);

  const std::vector<ParamInfo>& params() const { return params_; }
  const ParamInfo& operator[](int i) const { return params_[static_cast<size_t>(i)]; }
  int64_t total() const { return total_; }
  int index_of(const std::string& name) const;  // throws when unknown

  // Embedding parameters.
  int patch_w, patch_b, cls_token, pos_embed;
  // Final LayerNorm and classifier.
  int norm_w, norm_b, head_w, head_b;
  std::vector<BlockParams> blocks;

  // [begin, end) element range of block l's parameters; of the embeddings;
  // of the final norm + head.
  std::pair<int64_t, int64_t> block_range(int l) const;
  std::pair<int64_t, int64_t> embed_range() const;
  std::pair<int64_t, int64_t> head_range() const;

 private:
  int add(const std::string& name, std::vector<int64_t> shape, Init init);
  std::vector<ParamInfo> params_;
  int64_t total_ = 0;
};

// Fills `flat` (total() fp32 values) with the published initialisation:
// truncated normal (std = init_std, cut at 2 std) for weights, class token
// and position embeddings; zeros for biases; ones for LayerNorm weights. Each
// parameter draws from its own stream seeded by (seed, index), so the values
// do not depend on how a plugin later shards the buffer.
void init_params(const ParamLayout& layout, float init_std, uint64_t seed, float* flat);

}  // namespace vit::model
