// Distributed sampler: which dataset indices each data-parallel rank takes at
// each step.
//
// Per epoch one permutation of 0..N-1, a pure function of (seed, epoch)
// (Fisher-Yates driven by vit::Rng(mix_seed(seed, epoch))), so every rank
// computes the same order without communicating; shuffle = false gives the
// identity. Step s takes the permutation's next G = dp_size * batch_per_rank
// indices (the global batch) and splits them into dp_size contiguous slices,
// rank r taking slice r.
//
//   drop_last = true:  steps = floor(N / G); every rank gets batch_per_rank
//                      images every step; the N mod G left over are skipped
//                      (different ones each epoch when shuffled).
//   drop_last = false: steps = ceil(N / G); the last global batch holds
//                      R = N - (steps-1)*G images, split as evenly as possible:
//                      rank r gets R/dp_size images, plus one if r < R % dp_size.
//                      A rank may get fewer than the others, even none; every
//                      rank still takes the step (the trainer weights by
//                      global_count). Every index is used exactly once.
//
// steps_per_epoch() is the same on every rank, so the ranks' collectives stay
// in step. Not thread-safe (it caches the current epoch's permutation):
// each thread keeps its own copy.
#pragma once

#include <cstdint>
#include <vector>

namespace vit::data {

struct SamplerOptions {
  int64_t dataset_size = 0;
  int64_t batch_per_rank = 1;
  int dp_rank = 0, dp_size = 1;
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
};

class DistributedSampler {
 public:
  explicit DistributedSampler(const SamplerOptions& opts);  // vit::Error on nonsense (batch 0, rank >= size)

  const SamplerOptions& options() const { return opts_; }
  int64_t steps_per_epoch() const { return steps_; }
  int64_t global_batch() const { return opts_.batch_per_rank * opts_.dp_size; }

  // The epoch's order of all N indices (identical on every rank).
  std::vector<int64_t> permutation(int64_t epoch) const;

  // Dataset indices of this rank for `step` of `epoch` (size <= batch_per_rank).
  std::vector<int64_t> rank_indices(int64_t epoch, int64_t step) const;
  // The same for any rank (tests, and ranks that want to know their peers' share).
  std::vector<int64_t> indices_of_rank(int64_t epoch, int64_t step, int dp_rank) const;
  // Images in this step over all ranks.
  int64_t global_count(int64_t epoch, int64_t step) const;

 private:
  // [begin, end) of rank `r`'s slice inside the permutation for `step`.
  void slice(int64_t step, int r, int64_t* begin, int64_t* end) const;
  const std::vector<int64_t>& cached_permutation(int64_t epoch) const;

  SamplerOptions opts_;
  int64_t steps_ = 0;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_;
};

}  // namespace vit::data
