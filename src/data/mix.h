// Mixup and cutmix (timm's Mixup in its per-sample form), on the loader's
// finished images, and the soft target each mixed image gets.
//
// Pairs. Within a step's global batch (the sampler's positions 0..G-1 over
// all data-parallel ranks), the image at position g is mixed with the one at
// g XOR 1: the permutation is random, so pairs are random; the partner
// usually lives on the same rank (ranks hold even-sized contiguous slices),
// and when it does not the loader reads it (both ranks can). An odd last
// position pairs with itself (mixing an image with itself changes nothing).
// Which pair an image belongs to, and therefore its result, does not depend
// on the number of ranks.
//
// Each image (epoch, dataset index) then draws from its own random stream:
//   u < mix_prob decides whether it is mixed at all;
//   cutmix when only cutmix is on, or both are and u' < mix_switch_prob;
//   lam ~ Beta(alpha, alpha) of the chosen mode.
// mixup:  y = lam x + (1 - lam) x_partner   (rounded to uint8)
// cutmix: a box of side ratio r = sqrt(1 - lam) (cut_w = floor(S r), cut_h
//         likewise), centre uniform over the image, clipped to it
//         (x0 = clamp(cx - cut_w / 2), x1 = clamp(cx + cut_w / 2), same in y,
//         as timm's rand_bbox), is pasted from the partner; then
//         lam = 1 - box area / S^2 (timm's correct_lam), the share of the
//         image that is still its own.
// Target: lam on the image's label, 1 - lam on the partner's label
// (kernels/cross_entropy.h forms the distribution, with label smoothing on
// top). An image that is not mixed has lam = 1 and its own label twice.
#pragma once

#include <cstdint>

#include "core/rng.h"
#include "data/augment.h"

namespace vit::data {

enum class MixMode : uint8_t { None, Mixup, Cutmix };

struct MixDecision {
  MixMode mode = MixMode::None;
  float lam = 1.0f;               // the image's own share (after the cutmix correction)
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // cutmix: the pasted box [x0, x1) x [y0, y1)
};

// Beta(a, b) from gamma variates (Marsaglia and Tsang; shape < 1 boosted by
// u^(1/shape)), written out so that a seed means the same numbers everywhere.
double sample_gamma(Rng& rng, double shape);
double sample_beta(Rng& rng, double a, double b);

// What image (epoch, index) does (a pure function of its arguments).
MixDecision sample_mix(const AugmentOptions& opts, int64_t epoch, int64_t index, int S);

// dst (S, S, 3) = the mix of own and partner that `d` says (dst may be own).
void apply_mix(const MixDecision& d, const uint8_t* own, const uint8_t* partner, uint8_t* dst, int S);

// The partner position of global position g in a step of `global_count` images.
inline int64_t mix_partner(int64_t g, int64_t global_count) {
  const int64_t p = g ^ 1;
  return p < global_count ? p : g;
}

}  // namespace vit::data
