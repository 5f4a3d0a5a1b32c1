#include "parallel/bucket_layout.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace vit::parallel {

BucketLayout::BucketLayout(const model::ParamLayout& layout, size_t bucket_bytes, int dp, int dp_rank, int64_t align)
    : layout_(layout), dp_(dp), dp_rank_(dp_rank) {
  VIT_CHECK(dp >= 1 && dp_rank >= 0 && dp_rank < dp, "data-parallel rank ", dp_rank, " of ", dp);
  VIT_CHECK(align >= 1, "bucket alignment must be positive");
  std::vector<model::Segment> backward = layout.segments();
  std::reverse(backward.begin(), backward.end());
  VIT_CHECK(!backward.empty(), "a bucket layout needs at least one segment");
  const int64_t target = std::max<int64_t>(1, static_cast<int64_t>(bucket_bytes / 4));
  Bucket cur;
  for (const model::Segment& s : backward) {
    const auto [b, e] = layout.range(s);
    if (cur.segments.empty()) cur.end = e;
    cur.begin = b;
    cur.segments.push_back(s);
    if (cur.end - cur.begin >= target) {
      buckets_.push_back(cur);
      cur = Bucket();
    }
  }
  if (!cur.segments.empty()) buckets_.push_back(cur);
  place(align);
}

BucketLayout::BucketLayout(const model::ParamLayout& layout, const std::vector<std::vector<model::Segment>>& groups,
                           int dp, int dp_rank, int64_t align)
    : layout_(layout), dp_(dp), dp_rank_(dp_rank) {
  VIT_CHECK(dp >= 1 && dp_rank >= 0 && dp_rank < dp, "data-parallel rank ", dp_rank, " of ", dp);
  VIT_CHECK(align >= 1, "bucket alignment must be positive");
  std::vector<model::Segment> backward = layout.segments();
  std::reverse(backward.begin(), backward.end());
  size_t next = 0;  // the groups must list every segment once, in backward order
  for (const auto& group : groups) {
    VIT_CHECK(!group.empty(), "a bucket needs at least one segment");
    Bucket b;
    b.end = layout.range(group.front()).second;
    for (const model::Segment& s : group) {
      VIT_CHECK(next < backward.size() && s == backward[next], "bucket groups must list the segments in backward "
                "order, each once; found ", s.name(), " at position ", next);
      ++next;
      b.begin = layout.range(s).first;
      b.segments.push_back(s);
    }
    buckets_.push_back(b);
  }
  VIT_CHECK(next == backward.size() && next > 0, "bucket groups cover ", next, " of ", backward.size(), " segments");
  place(align);
}

void BucketLayout::place(int64_t align) {
  // Padded places in buffer order (the last bucket formed holds the embeddings).
  const int64_t unit = static_cast<int64_t>(dp_) * align;
  int64_t at = 0;
  for (auto it = buckets_.rbegin(); it != buckets_.rend(); ++it) {
    it->padded_begin = at;
    it->padded_size = std::max<int64_t>(unit, (it->end - it->begin + unit - 1) / unit * unit);
    at += it->padded_size;
  }
  padded_total_ = at;
  int64_t shard_at = 0;
  for (auto it = buckets_.rbegin(); it != buckets_.rend(); ++it) {
    it->shard_offset = shard_at;
    shard_at += it->padded_size / dp_;
  }
}

int BucketLayout::bucket_of(const model::Segment& s) const {
  for (size_t b = 0; b < buckets_.size(); ++b) {
    for (const auto& t : buckets_[b].segments) {
      if (t == s) return static_cast<int>(b);
    }
  }
  VIT_THROW("segment ", s.name(), " belongs to no bucket of this rank");
}

int64_t BucketLayout::padded_offset(int64_t i) const {
  for (const Bucket& b : buckets_) {
    if (i >= b.begin && i < b.end) return b.padded_begin + (i - b.begin);
  }
  VIT_THROW("element ", i, " is outside every bucket (layout of ", layout_.total(), ")");
}

bool BucketLayout::is_first_of_bucket(const model::Segment& s) const {
  return buckets_[static_cast<size_t>(bucket_of(s))].segments.front() == s;
}

bool BucketLayout::is_last_of_bucket(const model::Segment& s) const {
  return buckets_[static_cast<size_t>(bucket_of(s))].segments.back() == s;
}

void BucketLayout::pad(const float* flat, float* padded) const {
  std::fill(padded, padded + padded_total_, 0.0f);
  for (const Bucket& b : buckets_) {
    std::memcpy(padded + b.padded_begin, flat + b.begin, static_cast<size_t>(b.end - b.begin) * sizeof(float));
  }
}

void BucketLayout::unpad(const float* padded, float* flat) const {
  for (const Bucket& b : buckets_) {
    std::memcpy(flat + b.begin, padded + b.padded_begin, static_cast<size_t>(b.end - b.begin) * sizeof(float));
  }
}

}  // namespace vit::parallel
