// Multi-head self-attention core on the CPU (non-causal), one task per
// (batch, head) pair spread over OpenMP threads.
//
// For one (b, h), with Q, K, V the (T, HS) slices of qkv (row stride 3C) and
// scale = 1 / sqrt(HS):
//   forward:  P = softmax(Q K^T scale) row by row (max subtracted first),
//             stored in aux (B, NH, T, T) fp32; O = P V into out (B, T, C).
//   backward: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)),
//             dQ = dS K scale, dK = dS^T Q scale, into dqkv's [q | k | v].
// The backward pass walks the query rows t once: row t of dP and dS lives
// in a per-thread scratch of T floats, dQ row t is finished at once, and
// dK, dV (T, HS) take their rank-1 contributions in place (they stay in
// cache: 2 T HS floats). No (T, T) temporary besides P itself.
// Loops are written as dot products (omp simd reductions) or as axpys over
// the contiguous HS channels, both of which vectorise. sgemm is not used:
// the products are small (T x T x HS per head) and OpenBLAS's pthreads
// would fight the OpenMP team that runs the heads.
// Each task writes only its own head's channels, so the tasks never race.
#include "kernels/attention.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu_checks.h"

namespace vit::kernels::cpu {

using detail::require_f32;
using detail::require_shape;
using detail::add_column_sums;

namespace {

struct Dims {
  int64_t B, T, C, NH, HS;
};

Dims check_qkv(const char* op, const Tensor& qkv, int NH) {
  require_f32(op, "qkv", qkv);
  if (qkv.ndim != 3 || qkv.shape[2] % 3 != 0) {
    VIT_THROW(op, ": qkv has shape ", qkv.shape_str(), ", expected (B, T, 3C)");
  }
  Dims d{qkv.shape[0], qkv.shape[1], qkv.shape[2] / 3, NH, 0};
  if (NH <= 0 || d.C % NH != 0 || d.C == 0) {
    VIT_THROW(op, ": C = ", d.C, " (from qkv ", qkv.shape_str(), ") is not a positive multiple of NH = ", NH);
  }
  d.HS = d.C / NH;
  return d;
}

void check_aux(const char* op, const Tensor& aux, const Dims& d) {
  require_f32(op, "aux", aux);
  const int64_t need = d.B * d.NH * d.T * d.T;
  if (aux.numel() < need) {
    VIT_THROW(op, ": aux has ", aux.numel(), " elements ", aux.shape_str(), ", the CPU path needs (B, NH, T, T) = ",
              need, " fp32 probabilities (attention_aux_bytes)");
  }
}

inline float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

inline void axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// The per-head loops below are templates on the head size: HS_T = 64 (the
// head size of every published ViT, tiny to large) fixes the channel loops
// at compile time, so they unroll with no remainder handling and the row
// accumulators (out row, dQ row) stay local instead of round-tripping through
// the output; HS_T = 0 serves any other head size. Both are compiled for
// several instruction sets (VIT_CPU_CLONES).

// One (b, h) pair of the forward pass. q_base points at the pair's head
// channels of token 0 in qkv; probs at its (T, T) block of aux; y_base at
// its head channels of token 0 in out.
template <int64_t HS_T>
VIT_CPU_CLONES void head_forward(const float* q_base, float* probs, float* y_base, int64_t T, int64_t C,
                                 int64_t head_size, float scale) {
  const int64_t HS = HS_T > 0 ? HS_T : head_size;
  const int64_t C3 = 3 * C;
  const float* k_base = q_base + C;
  const float* v_base = q_base + 2 * C;
  float local[HS_T > 0 ? HS_T : 1];
  for (int64_t t = 0; t < T; ++t) {
    const float* q = q_base + t * C3;
    float* p = probs + t * T;
    float row_max = -std::numeric_limits<float>::infinity();
    for (int64_t s = 0; s < T; ++s) {
      p[s] = dot(q, k_base + s * C3, HS) * scale;
      row_max = p[s] > row_max ? p[s] : row_max;
    }
    double sum = 0.0;
    for (int64_t s = 0; s < T; ++s) {
      p[s] = std::exp(p[s] - row_max);
      sum += p[s];
    }
    const float inv_sum = static_cast<float>(1.0 / sum);
    float* o = HS_T > 0 ? local : y_base + t * C;
    for (int64_t i = 0; i < HS; ++i) o[i] = 0.0f;
    for (int64_t s = 0; s < T; ++s) {
      p[s] *= inv_sum;
      axpy(p[s], v_base + s * C3, o, HS);
    }
    if (HS_T > 0) std::memcpy(y_base + t * C, local, static_cast<size_t>(HS) * sizeof(float));
  }
}

// One (b, h) pair of the backward pass; the pointers as in head_forward,
// g_base and dq_base at the pair's channels in dout and dqkv; ds is T floats.
template <int64_t HS_T>
VIT_CPU_CLONES void head_backward(const float* q_base, const float* probs, const float* g_base, float* dq_base,
                                  float* ds, int64_t T, int64_t C, int64_t head_size, float scale) {
  const int64_t HS = HS_T > 0 ? HS_T : head_size;
  const int64_t C3 = 3 * C;
  const float* k_base = q_base + C;
  const float* v_base = q_base + 2 * C;
  float* dk_base = dq_base + C;
  float* dv_base = dq_base + 2 * C;
  for (int64_t s = 0; s < T; ++s) {
    std::memset(dk_base + s * C3, 0, static_cast<size_t>(HS) * sizeof(float));
    std::memset(dv_base + s * C3, 0, static_cast<size_t>(HS) * sizeof(float));
  }
  float local[HS_T > 0 ? HS_T : 1];
  for (int64_t t = 0; t < T; ++t) {
    const float* p = probs + t * T;
    const float* go = g_base + t * C;  // dO row t
    // dP[t, s] = dO_t . V_s; dV_s += P[t, s] dO_t
    double row_dot = 0.0;  // sum_s P[t, s] dP[t, s]
    for (int64_t s = 0; s < T; ++s) {
      ds[s] = dot(go, v_base + s * C3, HS);
      row_dot += static_cast<double>(p[s]) * ds[s];
      axpy(p[s], go, dv_base + s * C3, HS);
    }
    const float rd = static_cast<float>(row_dot);
    // dS * scale, then dQ_t = sum_s dS[t, s] K_s and dK_s += dS[t, s] Q_t
    const float* q = q_base + t * C3;
    float* dq = HS_T > 0 ? local : dq_base + t * C3;
    for (int64_t i = 0; i < HS; ++i) dq[i] = 0.0f;
    for (int64_t s = 0; s < T; ++s) {
      const float dss = p[s] * (ds[s] - rd) * scale;
      axpy(dss, k_base + s * C3, dq, HS);
      axpy(dss, q, dk_base + s * C3, HS);
    }
    if (HS_T > 0) std::memcpy(dq_base + t * C3, local, static_cast<size_t>(HS) * sizeof(float));
  }
}

// The head size every published ViT uses; see above.
constexpr int64_t kCommonHeadSize = 64;

}  // namespace

void attention_forward(const Context&, Tensor out, Tensor aux, const Tensor& qkv, int NH, AttentionImpl) {
  const char* op = "attention_forward";
  const Dims d = check_qkv(op, qkv, NH);
  require_f32(op, "out", out);
  require_shape(op, "out", out, {d.B, d.T, d.C}, "(B, T, C)");
  check_aux(op, aux, d);
  VIT_CHECK(out.data != qkv.data, op, ": out must not alias qkv");

  const int64_t B = d.B, T = d.T, C = d.C, HS = d.HS, C3 = 3 * d.C;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(HS)));
  const float* x = qkv.f32();
  float* probs = aux.f32();
  float* y = out.f32();

#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < B * NH; ++task) {
    const int64_t b = task / NH, h = task % NH;
    const float* xq = x + b * T * C3 + h * HS;
    float* yh = y + b * T * C + h * HS;
    if (HS == kCommonHeadSize) {
      head_forward<kCommonHeadSize>(xq, probs + task * T * T, yh, T, C, HS, scale);
    } else {
      head_forward<0>(xq, probs + task * T * T, yh, T, C, HS, scale);
    }
  }
}

void attention_backward(const Context&, Tensor dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& aux, int NH, AttentionImpl, Tensor dbias, bool accumulate) {
  const char* op = "attention_backward";
  const Dims d = check_qkv(op, qkv, NH);
  require_f32(op, "dqkv", dqkv);
  require_shape(op, "dqkv", dqkv, {d.B, d.T, 3 * d.C}, "(B, T, 3C)");
  require_f32(op, "dout", dout);
  require_shape(op, "dout", dout, {d.B, d.T, d.C}, "(B, T, C)");
  // out is what the fused GPU path needs; the CPU checks it all the same so
  // that a call that works here works there.
  require_f32(op, "out", out);
  require_shape(op, "out", out, {d.B, d.T, d.C}, "(B, T, C)");
  check_aux(op, aux, d);
  VIT_CHECK(dqkv.data != qkv.data && dqkv.data != dout.data, op, ": dqkv must not alias qkv or dout");
  if (dbias.defined()) {
    require_f32(op, "dbias", dbias);
    require_shape(op, "dbias", dbias, {3 * d.C}, "(3C)");
  }

  const int64_t B = d.B, T = d.T, C = d.C, HS = d.HS, C3 = 3 * d.C;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(HS)));
  const float* x = qkv.f32();
  const float* g = dout.f32();
  const float* probs = aux.f32();
  float* dx = dqkv.f32();

#pragma omp parallel
  {
    std::vector<float> ds(static_cast<size_t>(T));  // row t of dP, then of dS * scale
#pragma omp for schedule(static)
    for (int64_t task = 0; task < B * NH; ++task) {
      const int64_t b = task / NH, h = task % NH;
      const float* xq = x + b * T * C3 + h * HS;
      const float* gh = g + b * T * C + h * HS;
      float* dxq = dx + b * T * C3 + h * HS;
      if (HS == kCommonHeadSize) {
        head_backward<kCommonHeadSize>(xq, probs + task * T * T, gh, dxq, ds.data(), T, C, HS, scale);
      } else {
        head_backward<0>(xq, probs + task * T * T, gh, dxq, ds.data(), T, C, HS, scale);
      }
    }
  }
  if (dbias.defined()) add_column_sums(dbias.f32(), dx, B * T, C3, accumulate);
}

}  // namespace vit::kernels::cpu
