// Patch embedding's data movement on the CPU: unfolding uint8 images into
// normalised patches, adding the class token and position embeddings, and
// picking the class token for the head.
//
// patchify normalises through a 256-entry table built with the exact
// expression of the contract, (x / 255 - 0.5) / 0.5 in fp32, so every byte
// maps to the same float as the formula (and nothing is recomputed per
// pixel). It reads each image row segment of a patch contiguously (kx, c
// fastest in NHWC) and scatters into the three channel planes of the patch
// (P index c*ps*ps + ky*ps + kx, the Conv2d weight's flattening).
// The parameter gradients of the embedding (class token, positions) are sums
// over the batch, taken in a fixed order with double accumulators.
// cls may be given as (C) or as Hugging Face's (1, 1, C), pos as (T, C) or
// (1, T, C): only the element count and the trailing dimensions matter.
#include "kernels/embedding.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cpu_checks.h"

namespace vit::kernels::cpu {

using detail::require_cpu;
using detail::require_f32;
using detail::require_shape;

namespace {

const std::array<float, 256>& pixel_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = (static_cast<float>(i) / 255.0f - 0.5f) / 0.5f;
    return t;
  }();
  return table;
}

// A (C) vector given with any number of leading 1s.
void require_vector(const char* op, const char* arg, const Tensor& t, int64_t C) {
  if (t.ndim < 1 || t.dim(-1) != C || t.numel() != C) {
    VIT_THROW(op, ": ", arg, " has shape ", t.shape_str(), ", expected (C) or (1, 1, C) with C = ", C);
  }
}

// A (T, C) matrix given with any number of leading 1s.
void require_matrix(const char* op, const char* arg, const Tensor& t, int64_t T, int64_t C) {
  if (t.ndim < 2 || t.dim(-1) != C || t.dim(-2) != T || t.numel() != T * C) {
    VIT_THROW(op, ": ", arg, " has shape ", t.shape_str(), ", expected (T, C) or (1, T, C) = (", T, ", ", C, ")");
  }
}

// x (B, T, C) fixes the sizes; patch_emb (B, T-1, C).
void check_tokens(const char* op, const char* x_name, const Tensor& x, const char* pe_name, const Tensor& pe) {
  require_f32(op, x_name, x);
  if (x.ndim != 3 || x.shape[1] < 1) VIT_THROW(op, ": ", x_name, " has shape ", x.shape_str(), ", expected (B, T, C)");
  require_f32(op, pe_name, pe);
  require_shape(op, pe_name, pe, {x.shape[0], x.shape[1] - 1, x.shape[2]}, "(B, NP = T - 1, C)");
}

}  // namespace

void patchify(const Context&, Tensor patches, const Tensor& images, int patch_size) {
  const char* op = "patchify";
  require_cpu(op, "images", images);  // uint8: no DType to check
  if (images.ndim != 4 || images.shape[3] != 3) {
    VIT_THROW(op, ": images has shape ", images.shape_str(), ", expected uint8 (B, H, W, 3)");
  }
  const int64_t B = images.shape[0], H = images.shape[1], W = images.shape[2];
  const int64_t ps = patch_size;
  if (ps <= 0 || H % ps != 0 || W % ps != 0) {
    VIT_THROW(op, ": image size ", H, " x ", W, " is not a multiple of the patch size ", ps);
  }
  const int64_t GW = W / ps, NP = (H / ps) * GW, P = 3 * ps * ps;
  require_f32(op, "patches", patches);
  require_shape(op, "patches", patches, {B, NP, P}, "(B, NP, P = 3*ps*ps)");

  const float* lut = pixel_table().data();
  const auto* img = static_cast<const uint8_t*>(images.data);
  float* out = patches.f32();
#pragma omp parallel for schedule(static) if (B * NP * P > detail::kParallelMin)
  for (int64_t bi = 0; bi < B * NP; ++bi) {
    const int64_t b = bi / NP, i = bi % NP;
    const int64_t py = i / GW, px = i % GW;
    float* dst = out + bi * P;
    for (int64_t ky = 0; ky < ps; ++ky) {
      const uint8_t* src = img + ((b * H + py * ps + ky) * W + px * ps) * 3;  // (ps, 3) pixels of this row
      for (int64_t kx = 0; kx < ps; ++kx) {
        for (int64_t c = 0; c < 3; ++c) dst[(c * ps + ky) * ps + kx] = lut[src[kx * 3 + c]];
      }
    }
  }
}

void embed_tokens_forward(const Context&, Tensor x, const Tensor& patch_emb, const Tensor& cls, const Tensor& pos) {
  const char* op = "embed_tokens_forward";
  check_tokens(op, "x", x, "patch_emb", patch_emb);
  const int64_t B = x.shape[0], T = x.shape[1], C = x.shape[2];
  require_f32(op, "cls", cls);
  require_vector(op, "cls", cls, C);
  require_f32(op, "pos", pos);
  require_matrix(op, "pos", pos, T, C);

  const float* pe = patch_emb.f32();
  const float* cl = cls.f32();
  const float* ps = pos.f32();
  float* y = x.f32();
#pragma omp parallel for schedule(static) if (B * T * C > detail::kParallelMin)
  for (int64_t bt = 0; bt < B * T; ++bt) {
    const int64_t b = bt / T, t = bt % T;
    const float* src = t == 0 ? cl : pe + (b * (T - 1) + t - 1) * C;
    const float* p = ps + t * C;
    float* dst = y + bt * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) dst[c] = src[c] + p[c];
  }
}

void embed_tokens_backward(const Context&, Tensor dpatch_emb, Tensor dcls, Tensor dpos, const Tensor& dx,
                           bool accumulate) {
  const char* op = "embed_tokens_backward";
  check_tokens(op, "dx", dx, "dpatch_emb", dpatch_emb);
  const int64_t B = dx.shape[0], T = dx.shape[1], C = dx.shape[2];
  require_f32(op, "dcls", dcls);
  require_vector(op, "dcls", dcls, C);
  require_f32(op, "dpos", dpos);
  require_matrix(op, "dpos", dpos, T, C);

  const float* g = dx.f32();
  float* dpe = dpatch_emb.f32();
  // dpatch_emb (B, NP, C) = dx[:, 1:], assigned.
#pragma omp parallel for schedule(static) if (B * T * C > detail::kParallelMin)
  for (int64_t b = 0; b < B; ++b) {
    std::memcpy(dpe + b * (T - 1) * C, g + (b * T + 1) * C, static_cast<size_t>((T - 1) * C) * sizeof(float));
  }
  // dpos (T, C) += sum_b dx[b]; dcls (C) += sum_b dx[b, 0] (the same sums as dpos row 0);
  // = instead of += when !accumulate.
  float* dp = dpos.f32();
  float* dc = dcls.f32();
#pragma omp parallel if (B * T * C > detail::kParallelMin)
  {
    std::vector<double> acc(static_cast<size_t>(C));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t b = 0; b < B; ++b) {
        const float* row = g + (b * T + t) * C;
        for (int64_t c = 0; c < C; ++c) acc[c] += row[c];
      }
      float* dst = dp + t * C;
      for (int64_t c = 0; c < C; ++c) dst[c] = (accumulate ? dst[c] : 0.0f) + static_cast<float>(acc[c]);
      if (t == 0) {
        for (int64_t c = 0; c < C; ++c) dc[c] = (accumulate ? dc[c] : 0.0f) + static_cast<float>(acc[c]);
      }
    }
  }
}

void select_cls_forward(const Context&, Tensor out, const Tensor& x) {
  const char* op = "select_cls_forward";
  require_f32(op, "x", x);
  if (x.ndim != 3 || x.shape[1] < 1) VIT_THROW(op, ": x has shape ", x.shape_str(), ", expected (B, T, C)");
  const int64_t B = x.shape[0], T = x.shape[1], C = x.shape[2];
  require_f32(op, "out", out);
  require_shape(op, "out", out, {B, C}, "(B, C)");
  const float* src = x.f32();
  float* dst = out.f32();
  for (int64_t b = 0; b < B; ++b) {
    std::memcpy(dst + b * C, src + b * T * C, static_cast<size_t>(C) * sizeof(float));
  }
}

void select_cls_backward(const Context&, Tensor dx, const Tensor& dout) {
  const char* op = "select_cls_backward";
  require_f32(op, "dx", dx);
  if (dx.ndim != 3 || dx.shape[1] < 1) VIT_THROW(op, ": dx has shape ", dx.shape_str(), ", expected (B, T, C)");
  const int64_t B = dx.shape[0], T = dx.shape[1], C = dx.shape[2];
  require_f32(op, "dout", dout);
  require_shape(op, "dout", dout, {B, C}, "(B, C)");
  const float* src = dout.f32();
  float* dst = dx.f32();
#pragma omp parallel for schedule(static) if (B * T * C > detail::kParallelMin)
  for (int64_t b = 0; b < B; ++b) {
    float* rows = dst + b * T * C;
    std::memcpy(rows, src + b * C, static_cast<size_t>(C) * sizeof(float));
    std::memset(rows + C, 0, static_cast<size_t>((T - 1) * C) * sizeof(float));
  }
}

}  // namespace vit::kernels::cpu
