// Softmax cross-entropy on the CPU, one row of K logits at a time.
//
// Numerically stable: the row maximum is subtracted before exponentiating,
// the exponentials are summed in double and loss = log(sum) + max - logit[label]
// is formed in double, so large logits neither overflow nor cancel. The
// gradient reuses the same exponentials: softmax = exp(l - max) / sum.
// Labels are validated (0 <= label < K) before the parallel loop: a bad label
// is a user-visible error, never an out-of-bounds read, and no exception
// leaves an OpenMP region.
// labels and predicted are int32 tensors; DType cannot say so (see
// cpu_checks.h), so only their device and shape are checked.
#include "kernels/cross_entropy.h"

#include <cmath>
#include <cstdint>

#include "kernels/cpu_checks.h"

namespace vit::kernels::cpu {

using detail::require_cpu;
using detail::require_f32;
using detail::require_shape;

void softmax_cross_entropy(const Context&, Tensor losses, Tensor predicted, Tensor dlogits, const Tensor& logits,
                           const Tensor& labels, float grad_scale) {
  const char* op = "softmax_cross_entropy";
  require_f32(op, "logits", logits);
  if (logits.ndim != 2 || logits.shape[1] <= 0) {
    VIT_THROW(op, ": logits has shape ", logits.shape_str(), ", expected (B, K) with K > 0");
  }
  const int64_t B = logits.shape[0], K = logits.shape[1];
  require_cpu(op, "labels", labels);
  require_shape(op, "labels", labels, {B}, "int32 (B)");
  require_f32(op, "losses", losses);
  require_shape(op, "losses", losses, {B}, "(B)");
  require_cpu(op, "predicted", predicted);
  require_shape(op, "predicted", predicted, {B}, "int32 (B)");
  if (dlogits.defined()) {
    require_f32(op, "dlogits", dlogits);
    require_shape(op, "dlogits", dlogits, {B, K}, "(B, K)");
  }

  const auto* lab = static_cast<const int32_t*>(labels.data);
  for (int64_t b = 0; b < B; ++b) {
    if (lab[b] < 0 || lab[b] >= K) {
      VIT_THROW(op, ": label ", lab[b], " of sample ", b, " is outside [0, K = ", K, ")");
    }
  }
  const float* x = logits.f32();
  float* loss = losses.f32();
  auto* pred = static_cast<int32_t*>(predicted.data);
  float* dx = dlogits.defined() ? dlogits.f32() : nullptr;

#pragma omp parallel for schedule(static) if (B * K > detail::kParallelMin)
  for (int64_t b = 0; b < B; ++b) {
    const float* row = x + b * K;
    int64_t best = 0;
    for (int64_t k = 1; k < K; ++k) best = row[k] > row[best] ? k : best;  // strict: lowest index wins ties
    const float row_max = row[best];
    double sum = 0.0;
    for (int64_t k = 0; k < K; ++k) sum += std::exp(static_cast<double>(row[k]) - row_max);
    loss[b] = static_cast<float>(std::log(sum) + row_max - row[lab[b]]);
    pred[b] = static_cast<int32_t>(best);
    if (dx != nullptr) {
      float* drow = dx + b * K;
      const double inv_sum = 1.0 / sum;
      for (int64_t k = 0; k < K; ++k) {
        const double softmax = std::exp(static_cast<double>(row[k]) - row_max) * inv_sum;
        drow[k] = static_cast<float>((softmax - (k == lab[b] ? 1.0 : 0.0)) * grad_scale);
      }
    }
  }
}

}  // namespace vit::kernels::cpu
