// JPEG decode/encode through libjpeg-turbo's TurboJPEG API (header-only, shared
// by vit_data_prep and the loader).
//
// Decoding is strict: TJFLAG_STOPONWARNING turns libjpeg's warnings (a
// truncated stream is only a warning, "Premature end of JPEG file", and would
// otherwise decode into grey rows) into failures. Decoding uses the accurate
// integer IDCT and fancy upsampling (TurboJPEG's defaults, the same as PIL),
// so pixels match what the Python image processors see.
#pragma once

#include <turbojpeg.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"

namespace vit::data {

class JpegCodec {
 public:
  JpegCodec() = default;
  ~JpegCodec() {
    if (dec_) tjDestroy(dec_);
    if (enc_) tjDestroy(enc_);
  }
  JpegCodec(const JpegCodec&) = delete;
  JpegCodec& operator=(const JpegCodec&) = delete;
  JpegCodec(JpegCodec&& o) noexcept : dec_(o.dec_), enc_(o.enc_) { o.dec_ = o.enc_ = nullptr; }
  JpegCodec& operator=(JpegCodec&&) = delete;

  // Reads width and height from the header. Returns false (and `why`) when
  // the bytes are not a JPEG TurboJPEG can read.
  bool header(const uint8_t* bytes, size_t size, int* width, int* height, std::string* why) {
    if (!dec_ && !(dec_ = tjInitDecompress())) VIT_THROW("tjInitDecompress failed: ", tjGetErrorStr2(nullptr));
    int subsamp = 0, colorspace = 0;
    if (tjDecompressHeader3(dec_, bytes, static_cast<unsigned long>(size), width, height, &subsamp, &colorspace) != 0) {
      *why = tjGetErrorStr2(dec_);
      return false;
    }
    if (*width <= 0 || *height <= 0) {
      *why = "image has no pixels";
      return false;
    }
    return true;
  }

  // Decodes to RGB (H, W, 3) into `rgb` (resized to fit). False and `why` on
  // any error or warning.
  bool decode_rgb(const uint8_t* bytes, size_t size, std::vector<uint8_t>* rgb, int* width, int* height,
                  std::string* why) {
    if (!header(bytes, size, width, height, why)) return false;
    rgb->resize(static_cast<size_t>(*width) * *height * 3);
    return decode_rgb_into(bytes, size, rgb->data(), *width, *height, why);
  }

  // Decodes into a caller buffer of exactly (height, width, 3).
  bool decode_rgb_into(const uint8_t* bytes, size_t size, uint8_t* rgb, int width, int height, std::string* why) {
    if (!dec_ && !(dec_ = tjInitDecompress())) VIT_THROW("tjInitDecompress failed: ", tjGetErrorStr2(nullptr));
    if (tjDecompress2(dec_, bytes, static_cast<unsigned long>(size), rgb, width, 0, height, TJPF_RGB,
                      TJFLAG_STOPONWARNING) != 0) {
      *why = tjGetErrorStr2(dec_);
      return false;
    }
    return true;
  }

  // Encodes RGB (H, W, 3) at `quality` with 4:4:4 chroma (no chroma
  // subsampling: at 224 px a halved colour resolution is visible damage).
  void encode_rgb(const uint8_t* rgb, int width, int height, int quality, std::vector<uint8_t>* out) {
    if (!enc_ && !(enc_ = tjInitCompress())) VIT_THROW("tjInitCompress failed: ", tjGetErrorStr2(nullptr));
    const unsigned long cap = tjBufSize(width, height, TJSAMP_444);
    out->resize(cap);
    unsigned char* dst = out->data();
    unsigned long size = cap;
    if (tjCompress2(enc_, rgb, width, 0, height, TJPF_RGB, &dst, &size, TJSAMP_444, quality, TJFLAG_NOREALLOC) != 0) {
      VIT_THROW("JPEG encode failed: ", tjGetErrorStr2(enc_));
    }
    out->resize(size);
  }

 private:
  tjhandle dec_ = nullptr;
  tjhandle enc_ = nullptr;
};

}  // namespace vit::data
