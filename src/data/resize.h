// Antialiased resize of 8-bit RGB images, the resize of the ViT image processor.
//
// The processor (PIL's BILINEAR, which antialiases) uses a triangle filter
// whose support widens by the shrink factor: each output pixel averages the
// input pixels under a triangle of half-width max(1, in/out) input pixels
// centred on the output pixel's centre mapped into the input ((o + 0.5) *
// in/out). stb_image_resize's STBIR_FILTER_TRIANGLE computes the same weights
// (downsampling in output space, which is the same triangle); we run it in
// linear (not sRGB) space, as PIL does on the 8-bit values. One difference
// remains at the borders: stb clamps (repeats the edge pixel) where PIL drops
// the taps outside the image and renormalises, so the outermost output
// pixels differ: on Beans 500 -> 224 (measured in double precision, 15
// images) the 2-pixel border ring differs by 0 (82%), 1 (16%), up to 10
// levels; the interior is identical. PIL also rounds to 8 bits between its
// two passes and uses 22-bit fixed-point weights, which moves some interior
// values by 1 level against this float32 path.
#pragma once

#include <cstdint>

namespace vit::data {

// src (h, w, 3) with row stride w*3 -> dst (out_h, out_w, 3).
void resize_rgb_antialiased(const uint8_t* src, int w, int h, uint8_t* dst, int out_w, int out_h);

}  // namespace vit::data_prep
