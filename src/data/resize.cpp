// stb_image_resize's implementation lives in this one translation unit.
#include "data/resize.h"

#define STB_IMAGE_RESIZE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_STATIC
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#endif
#include "stb_image_resize.h"
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include "core/error.h"

namespace vit::data {

void resize_rgb_antialiased(const uint8_t* src, int w, int h, uint8_t* dst, int out_w, int out_h) {
  const int ok = stbir_resize_uint8_generic(src, w, h, w * 3, dst, out_w, out_h, out_w * 3, 3,
                                            STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, STBIR_FILTER_TRIANGLE,
                                            STBIR_COLORSPACE_LINEAR, nullptr);
  VIT_CHECK(ok == 1, "stb resize ", w, "x", h, " -> ", out_w, "x", out_h, " failed (out of memory?)");
}

}  // namespace vit::data
