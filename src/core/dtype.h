// Element types: fp32 for master weights, optimizer states and every CPU
// computation; bf16 and fp16 for mixed-precision GPU compute; int32 for
// labels and predictions; uint8 for images.
//
// The host conversions below round to nearest even, like the device
// intrinsics, so CPU and GPU casts agree bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace vit {

enum class DType : uint8_t { F32 = 0, BF16 = 1, F16 = 2, I32 = 3, U8 = 4 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
    case DType::I32: return 4;
    case DType::BF16:
    case DType::F16: return 2;
    case DType::U8: return 1;
  }
  return 0;
}
inline bool is_float(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }
const char* dtype_name(DType t);          // "fp32", "bf16", "fp16", "int32", "uint8"
DType parse_dtype(const std::string& s);  // floating types only; throws vit::Error on an unknown name

// Host-side 16-bit floats (storage only; arithmetic happens in float).
struct bf16_t { uint16_t bits; };
struct f16_t { uint16_t bits; };

inline float bf16_to_float(bf16_t h) {
  uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline bf16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) {  // NaN stays NaN
    return bf16_t{static_cast<uint16_t>((u >> 16) | 0x40u)};
  }
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bf16_t{static_cast<uint16_t>(u >> 16)};
}

float f16_to_float(f16_t h);
f16_t float_to_f16(float f);

}  // namespace vit
