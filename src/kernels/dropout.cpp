// Drop path and dropout on the CPU (see dropout.h): one pass, the mask of
// each sample (drop path) or element (dropout) from noise_uniform.
#include "kernels/dropout.h"

#include "kernels/cpu_checks.h"

namespace vit::kernels::cpu {

using detail::require_f32;

namespace {

// (B, R) view of x; checks out against it and keep_prob.
int64_t check_mask_args(const char* op, const Tensor& out, const Tensor& x, float keep_prob, int64_t* R) {
  require_f32(op, "x", x);
  require_f32(op, "out", out);
  if (x.ndim < 2) VIT_THROW(op, ": x has shape ", x.shape_str(), ", expected (B, ...) with at least 2 dimensions");
  detail::require_numel(op, "out", out, x.numel(), "x's element count");
  if (!(keep_prob > 0.0f && keep_prob <= 1.0f)) VIT_THROW(op, ": keep probability ", keep_prob, " is outside (0, 1]");
  const int64_t B = x.dim(0);
  *R = B == 0 ? 0 : x.numel() / B;
  return B;
}

}  // namespace

void drop_path(const Context&, Tensor out, const Tensor& x, float keep_prob, uint64_t key, int64_t first_sample) {
  int64_t R = 0;
  const int64_t B = check_mask_args("drop_path", out, x, keep_prob, &R);
  const float* in = x.f32();
  float* o = out.f32();
  const float inv_keep = 1.0f / keep_prob;
#pragma omp parallel for schedule(static) if (B * R > detail::kParallelMin)
  for (int64_t b = 0; b < B; ++b) {
    const bool keep = noise_uniform(key, static_cast<uint64_t>(first_sample + b), 0) < keep_prob;
    const float s = keep ? inv_keep : 0.0f;
    for (int64_t r = 0; r < R; ++r) o[b * R + r] = in[b * R + r] * s;
  }
}

void dropout(const Context&, Tensor out, const Tensor& x, float keep_prob, uint64_t key, int64_t first_sample) {
  int64_t R = 0;
  const int64_t B = check_mask_args("dropout", out, x, keep_prob, &R);
  const float* in = x.f32();
  float* o = out.f32();
  const float inv_keep = 1.0f / keep_prob;
#pragma omp parallel for schedule(static) if (B * R > detail::kParallelMin)
  for (int64_t b = 0; b < B; ++b) {
    const uint64_t sample = static_cast<uint64_t>(first_sample + b);
    for (int64_t r = 0; r < R; ++r) {
      const bool keep = noise_uniform(key, sample, static_cast<uint64_t>(1 + r)) < keep_prob;
      o[b * R + r] = in[b * R + r] * (keep ? inv_keep : 0.0f);
    }
  }
}

}  // namespace vit::kernels::cpu
