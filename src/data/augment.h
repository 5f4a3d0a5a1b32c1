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
#pragma once

#include <cstdint>

namespace vit::data {

struct AugmentOptions {
  bool enabled = false;  // false: images pass through untouched
  float scale_min = 0.08f, scale_max = 1.0f;
  float ratio_min = 3.0f / 4.0f, ratio_max = 4.0f / 3.0f;
  bool hflip = true;
  uint64_t seed = 0;
};

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

}  // namespace vit::data
