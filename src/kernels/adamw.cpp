// AdamW on the CPU over flat fp32 buffers (torch.optim.AdamW semantics).
//
// The bias corrections are scalars of the step, computed once in double;
// the element loop is then torch's sequence in fp32:
//   p *= 1 - lr wd;  p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
// grad_scale and skip are 1-element host tensors read once, so a step that
// must be skipped (fp16 overflow) touches nothing, param_lowp included.
// param_lowp may be any dtype: with Gemini's CPU offload the master copy and
// the Adam states live in host memory while the compute copy that forward
// reads is bf16 or fp16; the cast happens in the same pass as the update.
//
// Speed (gemini's offloaded update runs here, once per step over the whole
// offloaded share of the model): the threads take 32 K-element blocks in
// turn (a dynamic schedule, so one thread that loses its core delays one
// block, not its whole share), the element loop is compiled for AVX-512, AVX2+FMA and the baseline
// (VIT_CPU_CLONES, picked at load time) with restrict pointers, and the
// 16-bit stores are branch-free integer code that vectorises (the NaN test of
// float_to_bf16 and the subnormal/overflow branches of float_to_f16 become
// selects; same bits, checked against core/dtype.h by test_cpu_optim). The
// loop moves ~30 bytes an element, so it is bound by memory bandwidth:
// tests/kernels/bench_adamw_cpu measures elements/s (before this layout:
// 0.20 G/s fp32 and 0.03-0.05 G/s with an fp16 copy on one core of the
// 2-core build machine; see the benchmark's output for today's numbers).
#include "kernels/adamw.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu_checks.h"

namespace vit::kernels::cpu {

using detail::require_cpu;
using detail::require_f32;
using detail::require_numel;

namespace {

struct Coeffs {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, decay, step_size, inv_sqrt_bc2, eps, grad_scale;
};

inline uint32_t bits_of(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

// float_to_bf16 without branches: round to nearest even, NaN kept quiet.
inline uint16_t bf16_bits(float x) {
  const uint32_t u = bits_of(x);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

// float_to_f16 without branches: every case computed, one selected.
inline uint16_t f16_bits(float x) {
  const uint32_t u = bits_of(x);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  // Normal results: rebias the exponent, round the 13 dropped bits to even.
  uint32_t normal = (abs - 0x38000000u) >> 13;
  const uint32_t rem = abs & 0x1fffu;
  normal += (rem > 0x1000u || (rem == 0x1000u && (normal & 1u))) ? 1u : 0u;
  // Subnormal results (abs in [2^-25, 2^-14)): the mantissa with its hidden
  // bit shifted right by 14..24 places, rounded to even. The shift is clamped
  // so that lanes taking another case stay defined.
  const uint32_t exp = abs >> 23;
  uint32_t shift = 126u - exp;
  shift = shift < 1u ? 1u : (shift > 31u ? 31u : shift);
  const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
  uint32_t sub = mant >> shift;
  const uint32_t sub_rem = mant & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1u);
  sub += (sub_rem > halfway || (sub_rem == halfway && (sub & 1u))) ? 1u : 0u;
  const uint32_t special = 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);  // inf, or a quiet NaN
  uint32_t h = normal;
  h = abs < 0x38800000u ? sub : h;
  h = abs < 0x33000000u ? 0u : h;
  h = abs >= 0x477ff000u ? 0x7c00u : h;  // overflow to inf
  h = abs >= 0x7f800000u ? special : h;
  return static_cast<uint16_t>(sign | h);
}

// One element: m, v and p updated in place; returns the new p.
inline float step(float& p, float& m, float& v, float g, const Coeffs& k) {
  const float gi = g * k.grad_scale;
  const float mi = k.beta1 * m + k.one_minus_beta1 * gi;
  const float vi = k.beta2 * v + k.one_minus_beta2 * gi * gi;
  m = mi;
  v = vi;
  float pi = p * k.decay;
  pi -= k.step_size * mi / (std::sqrt(vi) * k.inv_sqrt_bc2 + k.eps);
  p = pi;
  return pi;
}

// The element loops over [0, n) of one thread's range, one per kind of
// compute-dtype copy (target_clones does not take templates).
VIT_CPU_CLONES void update_range(int64_t n, float* __restrict p, float* __restrict m, float* __restrict v,
                                 const float* __restrict g, Coeffs k) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) step(p[i], m[i], v[i], g[i], k);
}

VIT_CPU_CLONES void update_range_f32(int64_t n, float* __restrict p, float* __restrict m, float* __restrict v,
                                     const float* __restrict g, float* __restrict low, Coeffs k) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) low[i] = step(p[i], m[i], v[i], g[i], k);
}

VIT_CPU_CLONES void update_range_bf16(int64_t n, float* __restrict p, float* __restrict m, float* __restrict v,
                                      const float* __restrict g, uint16_t* __restrict low, Coeffs k) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) low[i] = bf16_bits(step(p[i], m[i], v[i], g[i], k));
}

VIT_CPU_CLONES void update_range_f16(int64_t n, float* __restrict p, float* __restrict m, float* __restrict v,
                                     const float* __restrict g, uint16_t* __restrict low, Coeffs k) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) low[i] = f16_bits(step(p[i], m[i], v[i], g[i], k));
}

// Splits [0, n) into blocks of kBlock elements (whole cache lines of fp32)
// that the threads take one at a time (dynamic schedule), and runs the
// element loop on each. A thread that loses its core for a while (to the
// rank's main thread, which launches GPU work and waits for it, or to
// another process) then delays one block, not a whole per-thread share of
// the update; the result is the same whichever thread takes a block.
void update(int64_t n, float* p, float* m, float* v, const float* g, void* low, DType low_type, const Coeffs& k) {
  constexpr int64_t kBlock = int64_t(1) << 15;  // 32 K elements: ~1 MB of traffic, ~50 us on one core
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(dynamic, 1) if (n > detail::kParallelMin)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t b = blk * kBlock, len = std::min(kBlock, n - b);
    if (low == nullptr) {
      update_range(len, p + b, m + b, v + b, g + b, k);
    } else if (low_type == DType::F32) {
      update_range_f32(len, p + b, m + b, v + b, g + b, static_cast<float*>(low) + b, k);
    } else if (low_type == DType::BF16) {
      update_range_bf16(len, p + b, m + b, v + b, g + b, static_cast<uint16_t*>(low) + b, k);
    } else {
      update_range_f16(len, p + b, m + b, v + b, g + b, static_cast<uint16_t*>(low) + b, k);
    }
  }
}

}  // namespace

void adamw_update(const Context&, Tensor param, Tensor m, Tensor v, const Tensor& grad, Tensor param_lowp,
                  const AdamWHyper& hp, const Tensor& grad_scale, const Tensor& skip) {
  const char* op = "adamw_update";
  require_f32(op, "param", param);
  const int64_t n = param.numel();
  require_f32(op, "m", m);
  require_numel(op, "m", m, n, "param's element count");
  require_f32(op, "v", v);
  require_numel(op, "v", v, n, "param's element count");
  require_f32(op, "grad", grad);
  require_numel(op, "grad", grad, n, "param's element count");
  if (param_lowp.defined()) {
    require_cpu(op, "param_lowp", param_lowp);
    require_numel(op, "param_lowp", param_lowp, n, "param's element count");
  }
  if (grad_scale.defined()) {
    require_f32(op, "grad_scale", grad_scale);
    require_numel(op, "grad_scale", grad_scale, 1, "a single scale");
  }
  if (skip.defined()) {
    require_f32(op, "skip", skip);
    require_numel(op, "skip", skip, 1, "a single flag");
  }
  VIT_CHECK(hp.step >= 1, op, ": step is 1-based, got ", hp.step);
  VIT_CHECK(hp.beta1 >= 0.0f && hp.beta1 < 1.0f && hp.beta2 >= 0.0f && hp.beta2 < 1.0f, op,
            ": betas must lie in [0, 1), got ", hp.beta1, ", ", hp.beta2);
  VIT_CHECK(hp.eps > 0.0f, op, ": eps must be > 0, got ", hp.eps);
  VIT_CHECK(hp.lr >= 0.0f && hp.weight_decay >= 0.0f, op, ": lr and weight_decay must be >= 0, got ", hp.lr, ", ",
            hp.weight_decay);

  if (skip.defined() && skip.f32()[0] != 0.0f) return;

  const double bc1 = 1.0 - std::pow(static_cast<double>(hp.beta1), static_cast<double>(hp.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(hp.beta2), static_cast<double>(hp.step));
  Coeffs k{};
  k.beta1 = hp.beta1;
  k.beta2 = hp.beta2;
  k.one_minus_beta1 = 1.0f - hp.beta1;
  k.one_minus_beta2 = 1.0f - hp.beta2;
  k.decay = 1.0f - hp.lr * hp.weight_decay;
  k.step_size = static_cast<float>(hp.lr / bc1);
  k.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  k.eps = hp.eps;
  k.grad_scale = grad_scale.defined() ? grad_scale.f32()[0] : 1.0f;

  void* low = nullptr;
  if (param_lowp.defined()) {
    VIT_CHECK(param_lowp.dtype == DType::F32 || param_lowp.dtype == DType::BF16 || param_lowp.dtype == DType::F16, op,
              ": param_lowp must be fp32, bf16 or fp16, got ", dtype_name(param_lowp.dtype));
    low = param_lowp.data;
  }
  update(n, param.f32(), m.f32(), v.f32(), grad.f32(), low, param_lowp.dtype, k);
}

}  // namespace vit::kernels::cpu
