// Element-type conversions and fill on the CPU, every pair of fp32, bf16 and
// fp16, through core/dtype.h's host conversions (round to nearest even, the
// same bits as the device intrinsics).
//
// 16-bit to 16-bit goes through fp32, which is exact for both formats, so
// there is only the one rounding of the final conversion. Equal dtypes are
// a plain copy (memmove: dst may be src).
#include "kernels/cast.h"

#include <cstring>

#include "kernels/cpu_checks.h"

namespace vit::kernels::cpu {

using detail::require_cpu;
using detail::require_numel;

namespace {

inline float to_float(float x) { return x; }
inline float to_float(bf16_t x) { return bf16_to_float(x); }
inline float to_float(f16_t x) { return f16_to_float(x); }

template <typename T>
T from_float(float x);
template <>
inline float from_float<float>(float x) { return x; }
template <>
inline bf16_t from_float<bf16_t>(float x) { return float_to_bf16(x); }
template <>
inline f16_t from_float<f16_t>(float x) { return float_to_f16(x); }

template <typename Dst, typename Src>
void convert(Dst* dst, const Src* src, int64_t n) {
#pragma omp parallel for schedule(static) if (n > detail::kParallelMin)
  for (int64_t i = 0; i < n; ++i) dst[i] = from_float<Dst>(to_float(src[i]));
}

template <typename Dst>
void convert_to(Dst* dst, const Tensor& src, int64_t n) {
  switch (src.dtype) {
    case DType::F32: convert(dst, src.as<const float>(), n); break;
    case DType::BF16: convert(dst, src.as<const bf16_t>(), n); break;
    case DType::F16: convert(dst, src.as<const f16_t>(), n); break;
  }
}

template <typename T>
void fill_with(T* x, int64_t n, T value) {
#pragma omp parallel for simd schedule(static) if (n > detail::kParallelMin)
  for (int64_t i = 0; i < n; ++i) x[i] = value;
}

}  // namespace

void cast(const Context&, Tensor dst, const Tensor& src) {
  const char* op = "cast";
  require_cpu(op, "dst", dst);
  require_cpu(op, "src", src);
  require_numel(op, "src", src, dst.numel(), "dst's element count");
  const int64_t n = dst.numel();
  if (dst.dtype == src.dtype) {
    if (dst.data != src.data) std::memmove(dst.data, src.data, dst.bytes());
    return;
  }
  switch (dst.dtype) {
    case DType::F32: convert_to(dst.as<float>(), src, n); break;
    case DType::BF16: convert_to(dst.as<bf16_t>(), src, n); break;
    case DType::F16: convert_to(dst.as<f16_t>(), src, n); break;
  }
}

void fill(const Context&, Tensor x, float value) {
  const char* op = "fill";
  require_cpu(op, "x", x);
  const int64_t n = x.numel();
  switch (x.dtype) {
    case DType::F32: fill_with(x.as<float>(), n, value); break;
    case DType::BF16: fill_with(x.as<bf16_t>(), n, float_to_bf16(value)); break;
    case DType::F16: fill_with(x.as<f16_t>(), n, float_to_f16(value)); break;
  }
}

}  // namespace vit::kernels::cpu
