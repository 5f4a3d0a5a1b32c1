// Random masks of training-time regularisation: drop path (stochastic depth,
// one keep/drop decision per sample) and dropout (one per element).
//
// drop_path: out (B, R) = x * keep_b / keep_prob
// dropout:   out (B, R) = x * keep_{b,r} / keep_prob
// with keep = noise_uniform(key, first_sample + b, e) < keep_prob, e = 0 for
// drop path and 1 + r for dropout. out may alias x (element-wise). The
// survivors are scaled by 1 / keep_prob so that the expected output equals
// x (inverted dropout, as torch and timm do); evaluation skips these ops.
//
// The masks are not drawn from a stateful generator but computed from
// (key, sample, element) by an integer hash (noise_uniform below), the same
// function on the CPU and the GPU. So:
//   - forward and backward apply the same mask without storing it (backward
//     calls the same op on the gradient: d x = d out * keep / keep_prob);
//   - recompute rebuilds the same mask;
//   - the CPU and the GPU drop exactly the same samples and elements;
//   - a sample's mask depends on its global position in the step's batch
//     (first_sample + b), not on the rank that holds it, so 1, 2 or 4
//     data-parallel ranks drop the same samples of the same global batch.
// The caller derives one key per step and site (block, branch) with
// mix_seed (core/rng.h).
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "kernels/dispatch.h"

#if defined(__CUDACC__)
#define VIT_HOST_DEVICE __host__ __device__
#else
#define VIT_HOST_DEVICE
#endif

namespace vit::kernels {

// splitmix64's finaliser: a bijection of 64-bit integers that spreads every
// input bit over the output.
VIT_HOST_DEVICE inline uint64_t noise_mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [0, 1) on a 2^-24 grid (exact in fp32, so the comparison with
// keep_prob is the same on every device).
VIT_HOST_DEVICE inline float noise_uniform(uint64_t key, uint64_t sample, uint64_t element) {
  const uint64_t h = noise_mix(noise_mix(key + sample) ^ (element * 0xd1b54a32d192ed03ull));
  return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
}

VIT_DECLARE_KERNEL(void, drop_path, const Context& ctx, Tensor out, const Tensor& x, float keep_prob, uint64_t key,
                   int64_t first_sample)
VIT_DECLARE_KERNEL(void, dropout, const Context& ctx, Tensor out, const Tensor& x, float keep_prob, uint64_t key,
                   int64_t first_sample)

inline void drop_path(const Context& ctx, Tensor out, const Tensor& x, float keep_prob, uint64_t key,
                      int64_t first_sample) {
  VIT_DISPATCH(ctx, drop_path, ctx, out, x, keep_prob, key, first_sample);
}
inline void dropout(const Context& ctx, Tensor out, const Tensor& x, float keep_prob, uint64_t key,
                    int64_t first_sample) {
  VIT_DISPATCH(ctx, dropout, ctx, out, x, keep_prob, key, first_sample);
}

}  // namespace vit::kernels
