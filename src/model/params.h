// The parameter layout: every weight of the ViT as a named view into one flat
// buffer, for the whole model or for one rank's shard of it.
//
// Plugins shard, bucket, gather and offload the flat buffers (parameters,
// gradients, optimizer states all share this layout); the model only asks for
// views by index. Order: embeddings, then block 0..L-1, then the final norm
// and head, so each block is one contiguous range (a pipeline stage or a
// gradient bucket is a slice of the buffer), and backward produces gradients
// from the end of the buffer towards its start.
//
// A ShardSpec says what one rank holds:
//   - pipeline: the blocks [first_block, first_block + num_blocks), the
//     embeddings (first stage) and the final norm + head (last stage);
//   - tensor parallel (Megatron 1-D, tp ranks): in every block qkv and fc1
//     are column-parallel (their output features split; qkv splits q, k and
//     v separately by heads so each rank holds whole heads of each), proj and
//     fc2 row-parallel (their input features split); LayerNorms, biases of
//     row-parallel layers, embeddings and head are replicated.
// Each ParamInfo has its global shape (the unsharded tensor, as in a
// checkpoint) and its local shape (this rank's slice); offsets and numel are
// local. slice_of / place_slice move one named tensor between its full form
// and this rank's slice; extract_local / insert_local do it for every
// parameter between a full flat buffer (the layout of the same config with
// no sharding) and this rank's flat buffer.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "model/config.h"

namespace vit::model {

enum class Init : uint8_t { TruncNormal, Zeros, Ones };

// How a parameter is split over tensor-parallel ranks.
enum class TpSplit : uint8_t {
  Replicated,  // every rank holds all of it
  Column,      // dim 0 (output features) split in tp equal parts
  Row,         // dim 1 (input features) split in tp equal parts
  QkvColumn,   // dim 0 is [q | k | v]: each of the three split in tp parts (by heads)
};
const char* tp_split_name(TpSplit s);

struct ShardSpec {
  int tp_size = 1, tp_rank = 0;
  int first_block = 0;
  int num_blocks = -1;      // -1: all blocks from first_block on
  bool embeddings = true;   // patch embedding, class token, position embeddings
  bool head = true;         // final LayerNorm and classifier

  // Pipeline stage `stage` of `stages` (blocks split evenly, embeddings on the
  // first, head on the last) at tensor-parallel rank tp_rank of tp_size.
  static ShardSpec stage(const ViTConfig& cfg, int stages, int stage, int tp_size = 1, int tp_rank = 0);
  bool is_full() const { return tp_size == 1 && first_block == 0 && num_blocks < 0 && embeddings && head; }
};

struct ParamInfo {
  std::string name;                 // e.g. "blocks.3.attn.qkv.weight" (global block index)
  std::vector<int64_t> shape;       // local (this rank's slice), row-major
  std::vector<int64_t> global_shape;
  int global_index = -1;            // index in the unsharded layout of the same config
  TpSplit split = TpSplit::Replicated;
  int64_t offset = 0;               // elements from the start of the (local) flat buffer
  int64_t numel = 0;                // local
  Init init = Init::Zeros;
};

// Indices of one block's parameters inside ParamLayout::params().
struct BlockParams {
  bool present = false;  // this rank holds the block
  int ln1_w = -1, ln1_b = -1, qkv_w = -1, qkv_b = -1, proj_w = -1, proj_b = -1, ln2_w = -1, ln2_b = -1,
      fc1_w = -1, fc1_b = -1, fc2_w = -1, fc2_b = -1;
};

// The parts of the model in the order of the buffer (and of forward): what a
// pipeline stage holds, what backward hands over when its gradient is final,
// what a ZeRO-3 plugin gathers before use.
struct Segment {
  enum Kind : uint8_t { Embed, Block, Head };
  Kind kind = Embed;
  int block = -1;  // for Kind::Block
  bool operator==(const Segment& o) const { return kind == o.kind && block == o.block; }
  std::string name() const;
};

class ParamLayout {
 public:
  explicit ParamLayout(const ViTConfig& cfg, const ShardSpec& shard = ShardSpec());

  const ViTConfig& config() const { return cfg_; }
  const ShardSpec& shard() const { return shard_; }
  const std::vector<ParamInfo>& params() const { return params_; }
  const ParamInfo& operator[](int i) const { return params_[static_cast<size_t>(i)]; }
  int64_t total() const { return total_; }
  int index_of(const std::string& name) const;  // throws when unknown
  int find(const std::string& name) const;      // -1 when this rank does not hold it
  // Elements of the unsharded layout of the same config.
  int64_t global_total() const { return global_total_; }

  // Embedding parameters (-1 when this rank does not hold them).
  int patch_w = -1, patch_b = -1, cls_token = -1, pos_embed = -1;
  // Final LayerNorm and classifier (-1 when not held).
  int norm_w = -1, norm_b = -1, head_w = -1, head_b = -1;
  std::vector<BlockParams> blocks;  // indexed by the global block number; .present says if held
  bool has_block(int l) const { return l >= 0 && l < static_cast<int>(blocks.size()) && blocks[l].present; }
  int first_block() const { return first_block_; }
  int end_block() const { return end_block_; }  // one past the last block held

  // The segments this rank holds, in buffer (forward) order, and the
  // [begin, end) element range of each.
  std::vector<Segment> segments() const;
  std::pair<int64_t, int64_t> range(const Segment& s) const;
  std::pair<int64_t, int64_t> block_range(int l) const;
  std::pair<int64_t, int64_t> embed_range() const;
  std::pair<int64_t, int64_t> head_range() const;

  // One named tensor: full (global_shape, row-major) -> this rank's slice
  // (local shape), and back (writes only the slice's elements of `full`).
  void slice_of(int index, const float* full, float* local) const;
  void place_slice(int index, const float* local, float* full) const;
  // The contiguous runs that make up this rank's slice of tensor `index`, in
  // local order (the walk slice_of and place_slice make): elements
  // [full, full + count) of the full tensor (row-major over its global shape)
  // are elements [local, local + count) of the slice. One run for a
  // replicated or column-split tensor, three for a qkv-column split, one per
  // row for a row split. Checkpoints name a slice's elements this way.
  struct SliceRun {
    int64_t full = 0, local = 0, count = 0;
  };
  std::vector<SliceRun> slice_runs(int index) const;
  // Every parameter: a flat buffer of the unsharded layout -> this rank's
  // flat buffer, and back (each rank fills in its own slices).
  void extract_local(const float* full_flat, float* local_flat) const;
  void insert_local(const float* local_flat, float* full_flat) const;

 private:
  int add(const std::string& name, std::vector<int64_t> global_shape, Init init, TpSplit split, bool held);
  ViTConfig cfg_;
  ShardSpec shard_;
  std::vector<ParamInfo> params_;
  std::vector<int64_t> global_offsets_;  // by global index
  int64_t total_ = 0, global_total_ = 0;
  int global_count_ = 0;
  int first_block_ = 0, end_block_ = 0;
};

// Fills `flat` (total() fp32 values of an UNSHARDED layout) with the
// published initialisation: truncated normal (std = init_std, cut at 2 std)
// for weights, class token and position embeddings; zeros for biases; ones
// for LayerNorm weights. Each parameter draws from its own stream seeded by
// (seed, index), so the values do not depend on how a plugin later shards
// the buffer (shard it with extract_local).
void init_params(const ParamLayout& layout, float init_std, uint64_t seed, float* flat);

}  // namespace vit::model
