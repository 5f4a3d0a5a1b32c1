// Mixup / cutmix decisions and pixels (see mix.h).
#include "data/mix.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace vit::data {

double sample_gamma(Rng& rng, double shape) {
  VIT_CHECK(shape > 0.0, "gamma shape ", shape, " must be > 0");
  if (shape < 1.0) {  // Gamma(a) = Gamma(a + 1) * U^(1/a)
    double u;
    do {
      u = rng.uniform();
    } while (u <= 0.0);
    return sample_gamma(rng, shape + 1.0) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x, v;
    do {
      x = rng.normal();
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = rng.uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0.0 && std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

double sample_beta(Rng& rng, double a, double b) {
  const double x = sample_gamma(rng, a), y = sample_gamma(rng, b);
  return x + y > 0.0 ? x / (x + y) : 0.5;
}

MixDecision sample_mix(const AugmentOptions& o, int64_t epoch, int64_t index, int S) {
  MixDecision d;
  if (!o.mixing()) return d;
  Rng rng(mix_seed(o.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index), 0xa09));
  if (rng.uniform() >= o.mix_prob) return d;
  const bool cutmix = o.cutmix_alpha > 0.0f && (o.mixup_alpha <= 0.0f || rng.uniform() < o.mix_switch_prob);
  const double alpha = cutmix ? o.cutmix_alpha : o.mixup_alpha;
  const double lam = sample_beta(rng, alpha, alpha);
  if (!cutmix) {
    d.mode = MixMode::Mixup;
    d.lam = static_cast<float>(lam);
    return d;
  }
  d.mode = MixMode::Cutmix;
  const double r = std::sqrt(1.0 - lam);
  const int cut = static_cast<int>(S * r);  // floor, as timm's int()
  const int cy = static_cast<int>(rng.below(static_cast<uint64_t>(S)));
  const int cx = static_cast<int>(rng.below(static_cast<uint64_t>(S)));
  d.y0 = std::clamp(cy - cut / 2, 0, S);
  d.y1 = std::clamp(cy + cut / 2, 0, S);
  d.x0 = std::clamp(cx - cut / 2, 0, S);
  d.x1 = std::clamp(cx + cut / 2, 0, S);
  const double area = static_cast<double>(d.x1 - d.x0) * (d.y1 - d.y0);
  d.lam = static_cast<float>(1.0 - area / (static_cast<double>(S) * S));
  return d;
}

void apply_mix(const MixDecision& d, const uint8_t* own, const uint8_t* partner, uint8_t* dst, int S) {
  const size_t bytes = static_cast<size_t>(S) * S * 3;
  if (dst != own) std::memcpy(dst, own, bytes);
  if (d.mode == MixMode::Mixup) {
    const float lam = d.lam;
    for (size_t i = 0; i < bytes; ++i) {
      const float v = lam * own[i] + (1.0f - lam) * partner[i];
      dst[i] = static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f) + 0.5f);
    }
  } else if (d.mode == MixMode::Cutmix) {
    for (int y = d.y0; y < d.y1; ++y) {
      const size_t at = (static_cast<size_t>(y) * S + d.x0) * 3;
      std::memcpy(dst + at, partner + at, static_cast<size_t>(d.x1 - d.x0) * 3);
    }
  }
}

}  // namespace vit::data
