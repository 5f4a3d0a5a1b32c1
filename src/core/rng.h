// Deterministic random numbers, identical on every platform and rank.
//
// xoshiro256** seeded through splitmix64. The distributions are written out
// here (not std::normal_distribution, whose output differs between standard
// libraries) so that a seed means the same numbers everywhere.
#pragma once

#include <cstdint>

namespace vit {

// Mixes several integers into one well-spread 64-bit seed.
uint64_t mix_seed(uint64_t a, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0);

class Rng {
 public:
  explicit Rng(uint64_t seed);

  uint64_t next_u64();
  uint32_t next_u32() { return static_cast<uint32_t>(next_u64() >> 32); }
  double uniform();                  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  uint64_t below(uint64_t n);        // uniform integer in [0, n), unbiased
  double normal();                   // standard normal (Box-Muller)
  // Normal(0, std) truncated to [lo, hi] in units of the value (not std),
  // by rejection, as torch.nn.init.trunc_normal_ with a=-2, b=2 does.
  double trunc_normal(double std, double lo = -2.0, double hi = 2.0);

 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0.0;
};

}  // namespace vit
