// Random resized crop + flip (see augment.h for the exact rules).
#include "data/augment.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/auto_augment.h"

namespace vit::data {

CropBox sample_augmentation(const AugmentOptions& o, int64_t epoch, int64_t index, int width, int height) {
  Rng rng(mix_seed(o.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index), 0xa06));
  CropBox box;
  const double area = static_cast<double>(width) * height;
  const double log_rmin = std::log(static_cast<double>(o.ratio_min));
  const double log_rmax = std::log(static_cast<double>(o.ratio_max));
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target = area * rng.uniform(o.scale_min, o.scale_max);
    const double ratio = std::exp(rng.uniform(log_rmin, log_rmax));
    const int w = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const int h = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      box.y = static_cast<int>(rng.below(static_cast<uint64_t>(height - h + 1)));
      box.x = static_cast<int>(rng.below(static_cast<uint64_t>(width - w + 1)));
      box.w = w;
      box.h = h;
      found = true;
    }
  }
  if (!found) {  // the central crop, aspect ratio clamped into range
    const double in_ratio = static_cast<double>(width) / height;
    if (in_ratio < o.ratio_min) {
      box.w = width;
      box.h = static_cast<int>(std::lround(width / static_cast<double>(o.ratio_min)));
    } else if (in_ratio > o.ratio_max) {
      box.h = height;
      box.w = static_cast<int>(std::lround(height * static_cast<double>(o.ratio_max)));
    } else {
      box.w = width;
      box.h = height;
    }
    box.w = std::clamp(box.w, 1, width);
    box.h = std::clamp(box.h, 1, height);
    box.y = (height - box.h) / 2;
    box.x = (width - box.w) / 2;
  }
  box.flip = o.hflip && rng.uniform() < 0.5;
  return box;
}

namespace {
// Source taps of one output coordinate (align_corners = False, edge clamped).
struct Tap {
  int i0, i1;
  float f;  // weight of i1
};
std::vector<Tap> taps(int out_size, int crop_offset, int crop_size) {
  std::vector<Tap> t(out_size);
  const double scale = static_cast<double>(crop_size) / out_size;
  for (int o = 0; o < out_size; ++o) {
    const double s = std::max(0.0, (o + 0.5) * scale - 0.5);
    const int i0 = std::min(static_cast<int>(s), crop_size - 1);
    const int i1 = std::min(i0 + 1, crop_size - 1);
    t[o] = {crop_offset + i0, crop_offset + i1, static_cast<float>(s - i0)};
  }
  return t;
}
}  // namespace

void crop_resize_flip(const uint8_t* src, int S, const CropBox& box, uint8_t* dst) {
  VIT_CHECK(box.x >= 0 && box.y >= 0 && box.w >= 1 && box.h >= 1 && box.x + box.w <= S && box.y + box.h <= S,
            "crop ", box.x, ",", box.y, " ", box.w, "x", box.h, " outside ", S, "x", S);
  const size_t row = static_cast<size_t>(S) * 3;
  if (box.w == S && box.h == S) {  // no resize: copy (mirrored if asked)
    for (int y = 0; y < S; ++y) {
      const uint8_t* s = src + y * row;
      uint8_t* d = dst + y * row;
      if (!box.flip) {
        std::memcpy(d, s, row);
      } else {
        for (int x = 0; x < S; ++x) std::memcpy(d + 3 * (S - 1 - x), s + 3 * x, 3);
      }
    }
    return;
  }
  // Separable: first every crop row resampled horizontally (flip folded in)
  // into float rows (h, S, 3), then each output row is one contiguous blend
  // of two of them, a loop the compiler vectorises.
  const std::vector<Tap> tx = taps(S, box.x, box.w), ty = taps(S, box.y, box.h);
  thread_local std::vector<float> rows;
  const size_t row_values = static_cast<size_t>(S) * 3;
  rows.resize(static_cast<size_t>(box.h) * row_values);
  for (int ry = 0; ry < box.h; ++ry) {
    const uint8_t* s = src + (box.y + ry) * row;
    float* r = rows.data() + ry * row_values;
    for (int ox = 0; ox < S; ++ox) {
      const Tap& t = tx[ox];
      float* d = r + 3 * (box.flip ? S - 1 - ox : ox);
      for (int c = 0; c < 3; ++c) d[c] = s[3 * t.i0 + c] + t.f * (s[3 * t.i1 + c] - s[3 * t.i0 + c]);
    }
  }
  for (int oy = 0; oy < S; ++oy) {
    const float* top = rows.data() + (ty[oy].i0 - box.y) * row_values;
    const float* bot = rows.data() + (ty[oy].i1 - box.y) * row_values;
    const float fy = ty[oy].f;
    uint8_t* d = dst + oy * row;
    for (size_t k = 0; k < row_values; ++k) d[k] = static_cast<uint8_t>(top[k] + fy * (bot[k] - top[k]) + 0.5f);
  }
}

EraseBox sample_erase(const AugmentOptions& o, int64_t epoch, int64_t index, int S) {
  EraseBox box;
  if (o.erase_prob <= 0.0f) return box;
  Rng rng(mix_seed(o.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index), 0xa08));
  if (rng.uniform() >= o.erase_prob) return box;
  const double area = static_cast<double>(S) * S;
  const double log_rmin = std::log(0.3), log_rmax = std::log(1.0 / 0.3);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(0.02, 1.0 / 3.0);
    const double ratio = std::exp(rng.uniform(log_rmin, log_rmax));
    const int h = static_cast<int>(std::lround(std::sqrt(target * ratio)));
    const int w = static_cast<int>(std::lround(std::sqrt(target / ratio)));
    if (w >= 1 && h >= 1 && w < S && h < S) {
      box.y = static_cast<int>(rng.below(static_cast<uint64_t>(S - h + 1)));
      box.x = static_cast<int>(rng.below(static_cast<uint64_t>(S - w + 1)));
      box.w = w;
      box.h = h;
      box.applied = true;
      return box;
    }
  }
  return box;
}

void erase(const AugmentOptions& o, int64_t epoch, int64_t index, const EraseBox& box, uint8_t* img, int S) {
  if (!box.applied) return;
  VIT_CHECK(box.x >= 0 && box.y >= 0 && box.x + box.w <= S && box.y + box.h <= S, "erase box outside the image");
  Rng noise(mix_seed(o.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index), 0xa0e));
  for (int y = box.y; y < box.y + box.h; ++y) {
    uint8_t* row = img + (static_cast<size_t>(y) * S + box.x) * 3;
    for (int k = 0; k < box.w * 3; ++k) row[k] = static_cast<uint8_t>(noise.next_u64() >> 56);
  }
}

void transform_image(const AugmentOptions& opts, int64_t epoch, int64_t index, const uint8_t* src, uint8_t* dst,
                     int S, uint8_t* scratch) {
  const size_t bytes = static_cast<size_t>(S) * S * 3;
  if (opts.enabled) {
    crop_resize_flip(src, S, sample_augmentation(opts, epoch, index, S, S), dst);
  } else {
    std::memcpy(dst, src, bytes);
  }
  if (opts.auto_augment != AutoAugmentPolicy::None) {
    for (const AugOpChoice& op : sample_auto_augment(opts, epoch, index, S)) apply_aug_op(op, dst, S, scratch);
  }
  erase(opts, epoch, index, sample_erase(opts, epoch, index, S), dst, S);
}

void augment_image(const AugmentOptions& opts, int64_t epoch, int64_t index, uint8_t* img, int S, uint8_t* scratch) {
  if (!opts.enabled) return;
  const CropBox box = sample_augmentation(opts, epoch, index, S, S);
  if (box.w == S && box.h == S && !box.flip) return;
  crop_resize_flip(img, S, box, scratch);
  std::memcpy(img, scratch, static_cast<size_t>(S) * S * 3);
}

}  // namespace vit::data
