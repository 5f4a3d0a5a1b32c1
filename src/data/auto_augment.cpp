// TrivialAugment / RandAugment ops (see auto_augment.h for the table).
#include "data/auto_augment.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/rng.h"

namespace vit::data {

const char* aug_op_name(AugOp op) {
  static const char* names[kAugOps] = {"Identity",   "ShearX",    "ShearY",   "TranslateX", "TranslateY",
                                       "Rotate",     "Brightness", "Color",   "Contrast",   "Sharpness",
                                       "Posterize",  "Solarize",  "AutoContrast", "Equalize"};
  return names[static_cast<int>(op)];
}

bool aug_signed(AugOp op) {
  switch (op) {
    case AugOp::ShearX: case AugOp::ShearY: case AugOp::TranslateX: case AugOp::TranslateY: case AugOp::Rotate:
    case AugOp::Brightness: case AugOp::Color: case AugOp::Contrast: case AugOp::Sharpness:
      return true;
    default:
      return false;
  }
}

float aug_magnitude(AutoAugmentPolicy policy, AugOp op, int bin, int S) {
  VIT_CHECK(bin >= 0 && bin < kMagnitudeBins, "magnitude bin ", bin, " outside [0, ", kMagnitudeBins - 1, "]");
  VIT_CHECK(policy != AutoAugmentPolicy::None, "aug_magnitude: no policy");
  const bool wide = policy == AutoAugmentPolicy::Trivial;
  const double t = bin / 30.0;  // position in linspace(0, max, 31)
  switch (op) {
    case AugOp::ShearX: case AugOp::ShearY: return static_cast<float>((wide ? 0.99 : 0.3) * t);
    case AugOp::TranslateX: case AugOp::TranslateY:
      return static_cast<float>((wide ? 32.0 / 224.0 : 150.0 / 331.0) * S * t);
    case AugOp::Rotate: return static_cast<float>((wide ? 135.0 : 30.0) * t);
    case AugOp::Brightness: case AugOp::Color: case AugOp::Contrast: case AugOp::Sharpness:
      return static_cast<float>((wide ? 0.99 : 0.9) * t);
    case AugOp::Posterize: return static_cast<float>(8 - std::lround(bin / (wide ? 5.0 : 7.5)));
    case AugOp::Solarize: return static_cast<float>(255.0 * (1.0 - t));
    default: return 0.0f;
  }
}

std::vector<AugOpChoice> sample_auto_augment(const AugmentOptions& o, int64_t epoch, int64_t index, int S) {
  std::vector<AugOpChoice> ops;
  if (o.auto_augment == AutoAugmentPolicy::None) return ops;
  Rng rng(mix_seed(o.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index), 0xa07));
  const int n = o.auto_augment == AutoAugmentPolicy::Trivial ? 1 : o.rand_ops;
  VIT_CHECK(o.rand_magnitude >= 0 && o.rand_magnitude < kMagnitudeBins, "RandAugment magnitude ", o.rand_magnitude,
            " outside [0, ", kMagnitudeBins - 1, "]");
  for (int i = 0; i < n; ++i) {
    AugOpChoice c;
    c.op = static_cast<AugOp>(rng.below(kAugOps));
    const int bin = o.auto_augment == AutoAugmentPolicy::Trivial ? static_cast<int>(rng.below(kMagnitudeBins))
                                                                  : o.rand_magnitude;
    c.magnitude = aug_magnitude(o.auto_augment, c.op, bin, S);
    if (aug_signed(c.op) && rng.below(2) == 1) c.magnitude = -c.magnitude;
    ops.push_back(c);
  }
  return ops;
}

namespace {

inline uint8_t clamp_round(float v) { return static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f) + 0.5f); }

// y(px, py) = x(map(px, py)) with nearest neighbour, black outside; `map`
// takes and returns continuous coordinates (pixel centres at i + 0.5).
template <typename Map>
void resample(uint8_t* img, int S, uint8_t* scratch, Map map) {
  for (int y = 0; y < S; ++y) {
    for (int x = 0; x < S; ++x) {
      double sx, sy;
      map(x + 0.5, y + 0.5, &sx, &sy);
      const int ix = static_cast<int>(std::floor(sx)), iy = static_cast<int>(std::floor(sy));
      uint8_t* d = scratch + (static_cast<size_t>(y) * S + x) * 3;
      if (ix < 0 || iy < 0 || ix >= S || iy >= S) {
        d[0] = d[1] = d[2] = 0;
      } else {
        std::memcpy(d, img + (static_cast<size_t>(iy) * S + ix) * 3, 3);
      }
    }
  }
  std::memcpy(img, scratch, static_cast<size_t>(S) * S * 3);
}

inline float gray_of(const uint8_t* px) { return 0.2989f * px[0] + 0.587f * px[1] + 0.114f * px[2]; }

// y = f x + (1 - f) other, other per pixel and channel from `other_of(i, c)`.
template <typename Other>
void blend(uint8_t* img, int S, float f, Other other_of) {
  const size_t n = static_cast<size_t>(S) * S;
  for (size_t i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c) img[3 * i + c] = clamp_round(f * img[3 * i + c] + (1.0f - f) * other_of(i, c));
  }
}

void equalize_channel(uint8_t* img, int S, int c) {
  const size_t n = static_cast<size_t>(S) * S;
  std::array<int64_t, 256> hist{};
  for (size_t i = 0; i < n; ++i) ++hist[img[3 * i + c]];
  int last = -1, nonzero = 0;
  for (int v = 0; v < 256; ++v) {
    if (hist[v] > 0) {
      last = v;
      ++nonzero;
    }
  }
  if (nonzero <= 1) return;
  const int64_t step = (static_cast<int64_t>(n) - hist[last]) / 255;
  if (step == 0) return;
  std::array<uint8_t, 256> lut{};
  int64_t cum = step / 2;
  for (int v = 0; v < 256; ++v) {  // lut[v] = (cum of bins below v + step / 2) / step
    lut[v] = static_cast<uint8_t>(std::min<int64_t>(cum / step, 255));
    cum += hist[v];
  }
  for (size_t i = 0; i < n; ++i) img[3 * i + c] = lut[img[3 * i + c]];
}

}  // namespace

void apply_aug_op(const AugOpChoice& choice, uint8_t* img, int S, uint8_t* scratch) {
  const double m = choice.magnitude;
  const size_t n = static_cast<size_t>(S) * S;
  switch (choice.op) {
    case AugOp::Identity:
      return;
    case AugOp::ShearX:
      resample(img, S, scratch, [&](double x, double y, double* sx, double* sy) { *sx = x + m * y; *sy = y; });
      return;
    case AugOp::ShearY:
      resample(img, S, scratch, [&](double x, double y, double* sx, double* sy) { *sx = x; *sy = y + m * x; });
      return;
    case AugOp::TranslateX:
      resample(img, S, scratch, [&](double x, double y, double* sx, double* sy) { *sx = x - m; *sy = y; });
      return;
    case AugOp::TranslateY:
      resample(img, S, scratch, [&](double x, double y, double* sx, double* sy) { *sx = x; *sy = y - m; });
      return;
    case AugOp::Rotate: {
      const double th = m * M_PI / 180.0, cs = std::cos(th), sn = std::sin(th), c = S / 2.0;
      resample(img, S, scratch, [&](double x, double y, double* sx, double* sy) {
        const double dx = x - c, dy = y - c;
        *sx = c + cs * dx - sn * dy;
        *sy = c + sn * dx + cs * dy;
      });
      return;
    }
    case AugOp::Brightness:
      blend(img, S, static_cast<float>(1.0 + m), [](size_t, int) { return 0.0f; });
      return;
    case AugOp::Color: {
      std::vector<float> gray(n);
      for (size_t i = 0; i < n; ++i) gray[i] = gray_of(img + 3 * i);
      blend(img, S, static_cast<float>(1.0 + m), [&](size_t i, int) { return gray[i]; });
      return;
    }
    case AugOp::Contrast: {
      double sum = 0.0;
      for (size_t i = 0; i < n; ++i) sum += gray_of(img + 3 * i);
      const float mean = static_cast<float>(sum / static_cast<double>(n));
      blend(img, S, static_cast<float>(1.0 + m), [&](size_t, int) { return mean; });
      return;
    }
    case AugOp::Sharpness: {
      std::memcpy(scratch, img, n * 3);  // smooth(x): border pixels keep x
      for (int y = 1; y + 1 < S; ++y) {
        for (int x = 1; x + 1 < S; ++x) {
          for (int c = 0; c < 3; ++c) {
            int acc = 0;
            for (int dy = -1; dy <= 1; ++dy) {
              for (int dx = -1; dx <= 1; ++dx) acc += img[(static_cast<size_t>(y + dy) * S + x + dx) * 3 + c];
            }
            acc += 4 * img[(static_cast<size_t>(y) * S + x) * 3 + c];  // centre weight 5
            scratch[(static_cast<size_t>(y) * S + x) * 3 + c] = clamp_round(acc / 13.0f);
          }
        }
      }
      blend(img, S, static_cast<float>(1.0 + m), [&](size_t i, int c) { return static_cast<float>(scratch[3 * i + c]); });
      return;
    }
    case AugOp::Posterize: {
      const int bits = std::clamp(static_cast<int>(std::lround(m)), 1, 8);
      const uint8_t mask = static_cast<uint8_t>(0xFF << (8 - bits));
      for (size_t i = 0; i < 3 * n; ++i) img[i] &= mask;
      return;
    }
    case AugOp::Solarize:
      for (size_t i = 0; i < 3 * n; ++i) {
        if (img[i] >= m) img[i] = static_cast<uint8_t>(255 - img[i]);
      }
      return;
    case AugOp::AutoContrast:
      for (int c = 0; c < 3; ++c) {
        uint8_t lo = 255, hi = 0;
        for (size_t i = 0; i < n; ++i) {
          lo = std::min(lo, img[3 * i + c]);
          hi = std::max(hi, img[3 * i + c]);
        }
        if (hi <= lo) continue;
        const float scale = 255.0f / static_cast<float>(hi - lo);
        for (size_t i = 0; i < n; ++i) img[3 * i + c] = clamp_round((img[3 * i + c] - lo) * scale);
      }
      return;
    case AugOp::Equalize:
      for (int c = 0; c < 3; ++c) equalize_channel(img, S, c);
      return;
  }
  VIT_THROW("unknown augmentation op ", static_cast<int>(choice.op));
}

}  // namespace vit::data
