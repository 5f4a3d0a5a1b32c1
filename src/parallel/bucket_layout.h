// Gradient buckets over a rank's ParamLayout, padded so that every
// data-parallel rank owns an equal, aligned part of each.
//
// A bucket is a union of whole segments (head, block l, embeddings) adjacent
// in the buffer, about bucket_bytes of fp32 gradients, formed in backward
// order (head first) so a bucket is complete when backward has passed its
// lowest segment. Every flat buffer a data-parallel plugin keeps of the whole
// model (gradients, compute-dtype parameters) uses the padded layout: bucket b
// occupies [padded_begin, padded_begin + padded_size), its real elements
// first, zeros after; padded_size is a multiple of dp * align, so bucket b
// splits into dp equal parts of part_size() elements, each starting on an
// `align`-element boundary. Rank r owns part r of every bucket (Megatron's
// distributed optimizer shards this way): a reduce-scatter of the bucket
// leaves rank r's part in place at part_begin(b), an all-gather fills the
// others back. A rank's shard buffers (ZeRO master weights, AdamW states,
// stage-2 gradients) hold its parts of all buckets back to back, bucket b's
// at shard_offset(b).
//
//   layout   [ embed | block 0 | block 1 | ... | head ]
//   buckets      b2        b1                 b0          (backward order)
//   padded   [ b2 real | pad ][ b1 real | pad ][ b0 real | pad ]
//   rank r   part r of each bucket -> its shard buffer [ b2.r | b1.r | b0.r ]
#pragma once

#include <cstdint>
#include <vector>

#include "model/params.h"

namespace vit::parallel {

struct Bucket {
  int64_t begin = 0, end = 0;          // elements [begin, end) of the local layout
  int64_t padded_begin = 0;            // start in the padded buffers
  int64_t padded_size = 0;             // (end - begin) rounded up to a multiple of dp * align
  int64_t shard_offset = 0;            // start of this rank's part in its shard buffers
  std::vector<model::Segment> segments;  // backward order: the first to finish comes first
};

class BucketLayout {
 public:
  // align: elements per alignment unit of a part (64: 256 bytes of fp32).
  BucketLayout(const model::ParamLayout& layout, size_t bucket_bytes, int dp, int dp_rank, int64_t align = 64);
  // Buckets given as groups of whole segments (gemini's chunks): `groups` in
  // backward order, each group's segments adjacent and in backward order.
  BucketLayout(const model::ParamLayout& layout, const std::vector<std::vector<model::Segment>>& groups, int dp,
               int dp_rank, int64_t align = 64);

  const model::ParamLayout& layout() const { return layout_; }
  int dp() const { return dp_; }
  int dp_rank() const { return dp_rank_; }
  // In backward order (bucket 0 holds the head).
  const std::vector<Bucket>& buckets() const { return buckets_; }
  int64_t padded_total() const { return padded_total_; }
  int64_t shard_total() const { return padded_total_ / dp_; }
  int64_t part_size(int b) const { return buckets_[static_cast<size_t>(b)].padded_size / dp_; }
  // Where rank `rank`'s part of bucket b starts in the padded buffers.
  int64_t part_begin(int b, int rank) const { return buckets_[static_cast<size_t>(b)].padded_begin + rank * part_size(b); }
  int64_t part_begin(int b) const { return part_begin(b, dp_rank_); }

  int bucket_of(const model::Segment& s) const;
  // Element i of the local layout -> its place in the padded buffers.
  int64_t padded_offset(int64_t i) const;
  // The segment's position in its bucket's backward order (0 = first to finish).
  bool is_first_of_bucket(const model::Segment& s) const;
  bool is_last_of_bucket(const model::Segment& s) const;

  // Host copies between the local flat layout and the padded one (zeros in
  // the padding).
  void pad(const float* flat, float* padded) const;
  void unpad(const float* padded, float* flat) const;

 private:
  void place(int64_t align);  // padded places and shard offsets of buckets_
  const model::ParamLayout& layout_;
  int dp_, dp_rank_;
  std::vector<Bucket> buckets_;
  int64_t padded_total_ = 0;
};

}  // namespace vit::parallel
