// Reductions for the optimizer step on the CPU: squared norms, the
// nonfinite check, the clipping / unscaling coefficient, in-place scaling.
//
// sum_squares splits x into fixed blocks of 64K elements, sums each block in
// double (in parallel) and then adds the block sums in block order: the
// result does not depend on the thread count, so a run on 2 cores and a run
// on 16 agree bit for bit. nonfinite_flag tests the exponent bits directly
// (an OR over elements, order-free). sum_squares_flag does both in one sweep
// and adds exactly what sum_squares adds. grad_scale_from_norm follows
// torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6),
// capped at 1) and lets a NaN norm through to the scale, so that a broken
// step is visible rather than silently unclipped.
// x may be any dtype here (fp32 master gradients, or 16-bit ones).
#include "kernels/reduce.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/cpu_checks.h"

namespace vit::kernels::cpu {

using detail::require_cpu;
using detail::require_f32;
using detail::require_numel;

namespace {

inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const bf16_t* p, int64_t i) { return bf16_to_float(p[i]); }
inline float load(const f16_t* p, int64_t i) { return f16_to_float(p[i]); }

constexpr int64_t kSumBlock = 1 << 16;

// The sum of squares of x[begin, end) in double (one block of sum_squares_of).
template <typename T>
inline double block_squares(const T* x, int64_t begin, int64_t end) {
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = begin; i < end; ++i) {
    const double v = load(x, i);
    acc += v * v;
  }
  return acc;
}

template <typename T>
double sum_squares_of(const T* x, int64_t n) {
  const int64_t blocks = (n + kSumBlock - 1) / kSumBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    partial[blk] = block_squares(x, blk * kSumBlock, std::min(n, (blk + 1) * kSumBlock));
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

// sum_squares_of and the non-finite test in one sweep over memory: each
// block is summed exactly as sum_squares_of sums it (same blocks, same
// order, so the same bits) and then tested while it is still in cache.
template <typename T, typename Bits>
double sum_squares_and_nonfinite(const T* x, int64_t n, Bits exponent_mask, bool* found) {
  static_assert(sizeof(T) == sizeof(Bits), "the bits must have the element's width");
  const Bits* bits = reinterpret_cast<const Bits*>(x);
  const int64_t blocks = (n + kSumBlock - 1) / kSumBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
  bool any = false;
#pragma omp parallel for schedule(static) reduction(|| : any) if (blocks > 1)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t begin = blk * kSumBlock, end = std::min(n, (blk + 1) * kSumBlock);
    partial[blk] = block_squares(x, begin, end);
    bool bad = false;
    for (int64_t i = begin; i < end; ++i) bad = bad || (bits[i] & exponent_mask) == exponent_mask;
    any = any || bad;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  *found = any;
  return total;
}

// An element is inf or NaN when all its exponent bits are set.
template <typename Bits>
bool any_nonfinite(const Bits* x, int64_t n, Bits exponent_mask) {
  bool found = false;
#pragma omp parallel for reduction(|| : found) schedule(static) if (n > detail::kParallelMin)
  for (int64_t i = 0; i < n; ++i) found = found || (x[i] & exponent_mask) == exponent_mask;
  return found;
}

template <typename T>
void scale_elements(T* x, int64_t n, float s) {
#pragma omp parallel for schedule(static) if (n > detail::kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, float>) {
      x[i] *= s;
    } else if constexpr (std::is_same_v<T, bf16_t>) {
      x[i] = float_to_bf16(bf16_to_float(x[i]) * s);
    } else {
      x[i] = float_to_f16(f16_to_float(x[i]) * s);
    }
  }
}

void require_scalar(const char* op, const char* arg, const Tensor& t) {
  require_f32(op, arg, t);
  require_numel(op, arg, t, 1, "a single fp32 value");
}

}  // namespace

void sum_squares(const Context&, Tensor out, const Tensor& x) {
  const char* op = "sum_squares";
  require_scalar(op, "out", out);
  require_cpu(op, "x", x);
  const int64_t n = x.numel();
  double s = 0.0;
  switch (x.dtype) {
    case DType::F32: s = sum_squares_of(x.as<const float>(), n); break;
    case DType::BF16: s = sum_squares_of(x.as<const bf16_t>(), n); break;
    case DType::F16: s = sum_squares_of(x.as<const f16_t>(), n); break;
    default: VIT_THROW("not a floating-point dtype");
  }
  out.f32()[0] += static_cast<float>(s);
}

void nonfinite_flag(const Context&, Tensor flag, const Tensor& x) {
  const char* op = "nonfinite_flag";
  require_scalar(op, "flag", flag);
  require_cpu(op, "x", x);
  const int64_t n = x.numel();
  bool found = false;
  switch (x.dtype) {
    case DType::F32: found = any_nonfinite(x.as<const uint32_t>(), n, uint32_t{0x7f800000u}); break;
    case DType::BF16: found = any_nonfinite(x.as<const uint16_t>(), n, uint16_t{0x7f80u}); break;
    case DType::F16: found = any_nonfinite(x.as<const uint16_t>(), n, uint16_t{0x7c00u}); break;
    default: VIT_THROW("not a floating-point dtype");
  }
  if (found) flag.f32()[0] = 1.0f;
}

void sum_squares_flag(const Context&, Tensor sumsq, Tensor flag, const Tensor& x, Tensor /*partial: GPU only*/) {
  const char* op = "sum_squares_flag";
  require_scalar(op, "sumsq", sumsq);
  require_scalar(op, "flag", flag);
  require_cpu(op, "x", x);
  const int64_t n = x.numel();
  double s = 0.0;
  bool found = false;
  switch (x.dtype) {
    case DType::F32: s = sum_squares_and_nonfinite(x.as<const float>(), n, uint32_t{0x7f800000u}, &found); break;
    case DType::BF16: s = sum_squares_and_nonfinite(x.as<const bf16_t>(), n, uint16_t{0x7f80u}, &found); break;
    case DType::F16: s = sum_squares_and_nonfinite(x.as<const f16_t>(), n, uint16_t{0x7c00u}, &found); break;
    default: VIT_THROW("not a floating-point dtype");
  }
  sumsq.f32()[0] += static_cast<float>(s);
  if (found) flag.f32()[0] = 1.0f;
}

void grad_scale_from_norm(const Context&, Tensor scale, Tensor norm_out, const Tensor& sumsq, float max_norm,
                          float inv_loss_scale) {
  const char* op = "grad_scale_from_norm";
  require_scalar(op, "scale", scale);
  require_scalar(op, "norm_out", norm_out);
  require_scalar(op, "sumsq", sumsq);
  VIT_CHECK(inv_loss_scale > 0.0f && std::isfinite(inv_loss_scale), op,
            ": inv_loss_scale must be positive and finite, got ", inv_loss_scale);
  const double norm = std::sqrt(static_cast<double>(sumsq.f32()[0])) * inv_loss_scale;
  double clip = 1.0;
  if (max_norm > 0.0f) {
    const double coef = max_norm / (norm + 1e-6);
    clip = coef >= 1.0 ? 1.0 : coef;  // NaN stays NaN
  }
  scale.f32()[0] = static_cast<float>(inv_loss_scale * clip);
  norm_out.f32()[0] = static_cast<float>(norm);
}

void scale_inplace(const Context&, Tensor x, float s) {
  const char* op = "scale_inplace";
  require_cpu(op, "x", x);
  const int64_t n = x.numel();
  switch (x.dtype) {
    case DType::F32: scale_elements(x.as<float>(), n, s); break;
    case DType::BF16: scale_elements(x.as<bf16_t>(), n, s); break;
    case DType::F16: scale_elements(x.as<f16_t>(), n, s); break;
    default: VIT_THROW("not a floating-point dtype");
  }
}

}  // namespace vit::kernels::cpu
