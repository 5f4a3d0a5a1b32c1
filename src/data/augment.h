// Training augmentation: random resized crop back to S x S, then a random
// horizontal flip (torchvision's RandomResizedCrop + RandomHorizontalFlip).
//
// The randomness of one image is a pure function of (seed, epoch, dataset
// index): vit::Rng(mix_seed(seed, epoch, index)). The same image in the same
// epoch gets the same crop whatever the rank count, the thread that handles
// it, or its position in the batch.
//
// Crop (as torchvision's RandomResizedCrop.get_params): up to 10 tries of an
// area fraction uniform in [scale_min, scale_max] and an aspect ratio
// log-uniform in [ratio_min, ratio_max]; w = round(sqrt(area * ratio)),
// h = round(sqrt(area / ratio)); the first that fits gets a uniform
// position. If none fits: the central crop with the ratio clamped into
// range. The crop (at most S x S) is resized back to S x S with bilinear
// interpolation (half-pixel centres, edge clamped: align_corners = False);
// it only ever enlarges, so no antialiasing is needed.
// Flip: with probability 1/2 when hflip is on.
//
// Normalisation ((x/255 - 0.5)/0.5) is not done here: the loader hands out
// uint8 images and the patchify kernel normalises (src/kernels/embedding.h).
//
// The training recipe adds, each off by default and each with its own
// random stream of (seed, epoch, index), in timm's order:
//   1. crop + flip (above; `enabled`),
//   2. TrivialAugment or RandAugment (auto_augment.h: the op list and the
//      magnitudes),
//   3. random erasing (random_erase below),
//   4. mixup or cutmix of the finished image with its partner in the global
//      batch (mix.h), which also gives the sample its soft target.
// transform_image() runs 1-3 on one image; the loader runs 4 on the batch.
#pragma once

#include <cstdint>

namespace vit::data {

enum class AutoAugmentPolicy : uint8_t { None, Trivial, Rand };

struct AugmentOptions {
  bool enabled = false;  // random resized crop + flip; false: images pass through untouched by them
  float scale_min = 0.08f, scale_max = 1.0f;
  float ratio_min = 3.0f / 4.0f, ratio_max = 4.0f / 3.0f;
  bool hflip = true;
  uint64_t seed = 0;
  // Training recipe (all off by default).
  AutoAugmentPolicy auto_augment = AutoAugmentPolicy::None;
  int rand_ops = 2;          // RandAugment: ops per image (N)
  int rand_magnitude = 9;    // RandAugment: magnitude bin (M) of 0..30
  float erase_prob = 0.0f;   // random erasing probability
  float mixup_alpha = 0.0f;  // Beta(alpha, alpha) of mixup; 0 = off
  float cutmix_alpha = 0.0f; // Beta(alpha, alpha) of cutmix; 0 = off
  float mix_prob = 1.0f;     // probability that an image is mixed at all (when mixup or cutmix is on)
  float mix_switch_prob = 0.5f;  // with both on: probability of cutmix rather than mixup

  // Some per-image transform is on (the loader then decodes into scratch first).
  bool per_image() const { return enabled || auto_augment != AutoAugmentPolicy::None || erase_prob > 0.0f; }
  bool mixing() const { return mixup_alpha > 0.0f || cutmix_alpha > 0.0f; }
};

// Random erasing (timm's RandomErasing, one box, "pixel" mode): with
// probability erase_prob, up to 10 tries of a box of area uniform in
// [0.02, 1/3] of the image and aspect ratio (h / w) log-uniform in
// [0.3, 1/0.3]; h = round(sqrt(area * ratio)), w = round(sqrt(area / ratio));
// the first with w < S and h < S gets a uniform position and is filled with
// uniform random bytes (per pixel and channel: noise, not a colour). No box
// when every try fails.
struct EraseBox {
  bool applied = false;
  int x = 0, y = 0, w = 0, h = 0;
};
EraseBox sample_erase(const AugmentOptions& opts, int64_t epoch, int64_t index, int S);
void erase(const AugmentOptions& opts, int64_t epoch, int64_t index, const EraseBox& box, uint8_t* img, int S);

struct CropBox {
  int x = 0, y = 0, w = 0, h = 0;  // top-left corner and size in pixels
  bool flip = false;
};

// The crop and flip of one image (pure function of its arguments).
CropBox sample_augmentation(const AugmentOptions& opts, int64_t epoch, int64_t index, int width, int height);

// Bilinear resize of the region `box` of src (S, S, 3) to dst (S, S, 3),
// mirrored when box.flip. src and dst must not overlap.
void crop_resize_flip(const uint8_t* src, int S, const CropBox& box, uint8_t* dst);

// Applies the augmentation of (epoch, index) in place on img (S, S, 3);
// `scratch` holds S*S*3 bytes. No-op when !opts.enabled.
void augment_image(const AugmentOptions& opts, int64_t epoch, int64_t index, uint8_t* img, int S, uint8_t* scratch);

// Steps 1-3 of the file comment on one image: src (S, S, 3) -> dst; scratch
// holds S*S*3 bytes. src, dst and scratch must not overlap. A pure function
// of (opts, epoch, index, src).
void transform_image(const AugmentOptions& opts, int64_t epoch, int64_t index, const uint8_t* src, uint8_t* dst,
                     int S, uint8_t* scratch);

}  // namespace vit::data
