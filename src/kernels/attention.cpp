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
    const float* q_base = x + b * T * C3 + h * HS;
    const float* k_base = q_base + C;
    const float* v_base = q_base + 2 * C;
    for (int64_t t = 0; t < T; ++t) {
      const float* q = q_base + t * C3;
      float* p = probs + (task * T + t) * T;
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
      float* o = y + (b * T + t) * C + h * HS;
      std::memset(o, 0, static_cast<size_t>(HS) * sizeof(float));
      for (int64_t s = 0; s < T; ++s) {
        p[s] *= inv_sum;
        axpy(p[s], v_base + s * C3, o, HS);
      }
    }
  }
}

void attention_backward(const Context&, Tensor dqkv, const Tensor& dout, const Tensor& qkv, const Tensor& out,
                        const Tensor& aux, int NH, AttentionImpl) {
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
      const float* q_base = x + b * T * C3 + h * HS;
      const float* k_base = q_base + C;
      const float* v_base = q_base + 2 * C;
      float* dq_base = dx + b * T * C3 + h * HS;
      float* dk_base = dq_base + C;
      float* dv_base = dq_base + 2 * C;
      for (int64_t s = 0; s < T; ++s) {
        std::memset(dk_base + s * C3, 0, static_cast<size_t>(HS) * sizeof(float));
        std::memset(dv_base + s * C3, 0, static_cast<size_t>(HS) * sizeof(float));
      }
      for (int64_t t = 0; t < T; ++t) {
        const float* p = probs + (task * T + t) * T;
        const float* go = g + (b * T + t) * C + h * HS;  // dO row t
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
        float* dq = dq_base + t * C3;
        std::memset(dq, 0, static_cast<size_t>(HS) * sizeof(float));
        for (int64_t s = 0; s < T; ++s) {
          const float dss = p[s] * (ds[s] - rd) * scale;
          axpy(dss, k_base + s * C3, dq, HS);
          axpy(dss, q, dk_base + s * C3, HS);
        }
      }
    }
  }
}

}  // namespace vit::kernels::cpu
