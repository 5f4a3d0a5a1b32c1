// DistributedSampler (see sampler.h for the partition rules).
#include "data/sampler.h"

#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace vit::data {

DistributedSampler::DistributedSampler(const SamplerOptions& opts) : opts_(opts) {
  VIT_CHECK(opts.dataset_size >= 0, "dataset_size ", opts.dataset_size);
  VIT_CHECK(opts.batch_per_rank >= 1, "batch_per_rank ", opts.batch_per_rank, " must be >= 1");
  VIT_CHECK(opts.dp_size >= 1 && opts.dp_rank >= 0 && opts.dp_rank < opts.dp_size, "dp_rank ", opts.dp_rank,
            " / dp_size ", opts.dp_size);
  const int64_t g = global_batch();
  steps_ = opts.drop_last ? opts.dataset_size / g : (opts.dataset_size + g - 1) / g;
}

std::vector<int64_t> DistributedSampler::permutation(int64_t epoch) const {
  std::vector<int64_t> p(opts_.dataset_size);
  std::iota(p.begin(), p.end(), int64_t{0});
  if (!opts_.shuffle) return p;
  Rng rng(mix_seed(opts_.seed, static_cast<uint64_t>(epoch), 0x5a3b1e));
  for (int64_t i = opts_.dataset_size - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

const std::vector<int64_t>& DistributedSampler::cached_permutation(int64_t epoch) const {
  if (cached_epoch_ != epoch) {
    cached_ = permutation(epoch);
    cached_epoch_ = epoch;
  }
  return cached_;
}

void DistributedSampler::slice(int64_t step, int r, int64_t* begin, int64_t* end) const {
  VIT_CHECK(step >= 0 && step < steps_, "step ", step, " outside 0..", steps_ - 1);
  const int64_t g = global_batch();
  const int64_t start = step * g;
  const int64_t in_step = std::min(g, opts_.dataset_size - start);
  if (in_step == g) {
    *begin = start + r * opts_.batch_per_rank;
    *end = *begin + opts_.batch_per_rank;
    return;
  }
  // The short last batch (no drop_last): as even as possible, the first ranks one more.
  const int64_t base = in_step / opts_.dp_size, extra = in_step % opts_.dp_size;
  *begin = start + r * base + std::min<int64_t>(r, extra);
  *end = *begin + base + (r < extra ? 1 : 0);
}

std::vector<int64_t> DistributedSampler::indices_of_rank(int64_t epoch, int64_t step, int dp_rank) const {
  VIT_CHECK(dp_rank >= 0 && dp_rank < opts_.dp_size, "dp_rank ", dp_rank);
  int64_t b = 0, e = 0;
  slice(step, dp_rank, &b, &e);
  const auto& p = cached_permutation(epoch);
  return std::vector<int64_t>(p.begin() + b, p.begin() + e);
}

std::vector<int64_t> DistributedSampler::rank_indices(int64_t epoch, int64_t step) const {
  return indices_of_rank(epoch, step, opts_.dp_rank);
}

int64_t DistributedSampler::global_count(int64_t epoch, int64_t step) const {
  (void)epoch;  // the count does not depend on the order
  VIT_CHECK(step >= 0 && step < steps_, "step ", step, " outside 0..", steps_ - 1);
  return std::min(global_batch(), opts_.dataset_size - step * global_batch());
}

}  // namespace vit::data
