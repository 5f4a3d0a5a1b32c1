// TrivialAugment (Wide) and RandAugment on uint8 images (S, S, 3), with the
// op list and magnitudes of torchvision's TrivialAugmentWide and RandAugment
// (31 magnitude bins, 0..30):
//
//   op            unit                 TrivialAugment bin b      RandAugment bin b      signed
//   Identity      -                    -                         -                      -
//   ShearX        shear factor         0.99 b / 30               0.3 b / 30             yes
//   ShearY        shear factor         0.99 b / 30               0.3 b / 30             yes
//   TranslateX    pixels               (32/224) S b / 30         (150/331) S b / 30     yes
//   TranslateY    pixels               (32/224) S b / 30         (150/331) S b / 30     yes
//   Rotate        degrees              135 b / 30                30 b / 30              yes
//   Brightness    factor - 1           0.99 b / 30               0.9 b / 30             yes
//   Color         factor - 1           0.99 b / 30               0.9 b / 30             yes
//   Contrast      factor - 1           0.99 b / 30               0.9 b / 30             yes
//   Sharpness     factor - 1           0.99 b / 30               0.9 b / 30             yes
//   Posterize     bits kept            8 - round(b / 5)          8 - round(b / 7.5)     no
//   Solarize      threshold            255 (30 - b) / 30         255 (30 - b) / 30      no
//   AutoContrast  -                    -                         -                      -
//   Equalize      -                    -                         -                      -
//
// TrivialAugment: one op per image, op and bin uniform; RandAugment: N ops
// (rand_ops, with replacement), each at bin M (rand_magnitude). A signed op's
// magnitude is negated with probability 1/2. Translation is a fraction of the
// side (torchvision's TrivialAugmentWide moves up to 32 px at any size, which
// is half of a 64 px image; here 32 px at 224 px and proportionally less on
// smaller images).
//
// What each op does (x the input, y the output, per channel unless said):
//   Shear/Translate/Rotate: affine resampling with nearest neighbour, pixels
//     from outside the image black (0). Pixel centres at (i + 0.5); ShearX
//     takes y(px, py) = x(px + m py, py), ShearY y(px, py) = x(px, py + m px)
//     (both about the top-left corner, like PIL's AutoAugment), TranslateX
//     y(px, py) = x(px - m, py), Rotate turns the picture counter-clockwise
//     by m degrees about its centre.
//   Brightness: y = f x; Color: y = f x + (1 - f) gray (gray = 0.2989 R +
//     0.587 G + 0.114 B of the pixel); Contrast: y = f x + (1 - f) mean(gray
//     over the image); Sharpness: y = f x + (1 - f) smooth(x), smooth the 3x3
//     kernel [1 1 1; 1 5 1; 1 1 1] / 13 inside and x on the border; with
//     f = 1 + m; results clamped to [0, 255] and rounded.
//   Posterize: keep the top `bits` bits. Solarize: y = 255 - x where x >= t.
//   AutoContrast: each channel stretched linearly so its min is 0 and its max
//     255 (unchanged when flat). Equalize: each channel's histogram equalised
//     (PIL's / torchvision's lookup table).
//
// Each image's ops come from its own random stream of (seed, epoch, index).
#pragma once

#include <cstdint>
#include <vector>

#include "data/augment.h"

namespace vit::data {

enum class AugOp : uint8_t {
  Identity, ShearX, ShearY, TranslateX, TranslateY, Rotate, Brightness, Color, Contrast, Sharpness, Posterize,
  Solarize, AutoContrast, Equalize
};
constexpr int kAugOps = 14;
constexpr int kMagnitudeBins = 31;
const char* aug_op_name(AugOp op);

struct AugOpChoice {
  AugOp op = AugOp::Identity;
  float magnitude = 0.0f;  // in the op's unit (table above), sign included
};

// Unsigned magnitude of `op` at `bin` (0..30) for `policy` and side S.
float aug_magnitude(AutoAugmentPolicy policy, AugOp op, int bin, int S);
bool aug_signed(AugOp op);

// The ops of image (epoch, index); empty when opts.auto_augment is None.
std::vector<AugOpChoice> sample_auto_augment(const AugmentOptions& opts, int64_t epoch, int64_t index, int S);

// One op in place on img (S, S, 3); scratch holds S*S*3 bytes.
void apply_aug_op(const AugOpChoice& op, uint8_t* img, int S, uint8_t* scratch);

}  // namespace vit::data
