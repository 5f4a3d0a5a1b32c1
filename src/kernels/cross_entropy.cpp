// Softmax cross-entropy on the CPU, one row of K logits at a time.
//
// Numerically stable: the row maximum is subtracted before exponentiating,
// the exponentials are summed in double and loss = log(sum) + max - logit[label]
// is formed in double, so large logits neither overflow nor cancel. The
// gradient reuses the same exponentials: softmax = exp(l - max) / sum.
// Soft targets (mixup/cutmix pairs, label smoothing) share the loop: the
// target's dot product with the logits and the mean logit in double.
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

namespace {

// Checks the arguments both entry points share; returns (B, K).
void check_common(const char* op, const Tensor& losses, const Tensor& predicted, const Tensor& dlogits,
                  const Tensor& logits, const Tensor& labels, int64_t* B_out, int64_t* K_out) {
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
  *B_out = B;
  *K_out = K;
}

void check_labels(const char* op, const char* arg, const int32_t* lab, int64_t B, int64_t K) {
  for (int64_t b = 0; b < B; ++b) {
    if (lab[b] < 0 || lab[b] >= K) {
      VIT_THROW(op, ": ", arg, " ", lab[b], " of sample ", b, " is outside [0, K = ", K, ")");
    }
  }
}

// The row loop of both entry points. lab_b and lam null: hard labels; eps 0:
// no smoothing. With both off the arithmetic is the hard-label formula
// (log(sum) + max - logit[label]; softmax - onehot), operation for operation.
void xent_rows(int64_t B, int64_t K, const float* x, const int32_t* lab, const int32_t* lab_b, const float* lam,
               double eps, float grad_scale, float* loss, int32_t* pred, float* dx) {
  const bool soft = lab_b != nullptr || eps != 0.0;
#pragma omp parallel for schedule(static) if (B * K > detail::kParallelMin)
  for (int64_t b = 0; b < B; ++b) {
    const float* row = x + b * K;
    int64_t best = 0;
    for (int64_t k = 1; k < K; ++k) best = row[k] > row[best] ? k : best;  // strict: lowest index wins ties
    const float row_max = row[best];
    double sum = 0.0;
    for (int64_t k = 0; k < K; ++k) sum += std::exp(static_cast<double>(row[k]) - row_max);
    pred[b] = static_cast<int32_t>(best);
    const int32_t a = lab[b];
    const int32_t c = lab_b != nullptr ? lab_b[b] : a;
    const double la = lam != nullptr ? static_cast<double>(lam[b]) : 1.0;
    if (!soft) {
      loss[b] = static_cast<float>(std::log(sum) + row_max - row[a]);
    } else {
      double mean = 0.0;
      for (int64_t k = 0; k < K; ++k) mean += row[k];
      mean /= static_cast<double>(K);
      const double picked = la * row[a] + (1.0 - la) * row[c];
      loss[b] = static_cast<float>(std::log(sum) + row_max - (1.0 - eps) * picked - eps * mean);
    }
    if (dx != nullptr) {
      float* drow = dx + b * K;
      const double inv_sum = 1.0 / sum;
      for (int64_t k = 0; k < K; ++k) {
        const double softmax = std::exp(static_cast<double>(row[k]) - row_max) * inv_sum;
        double target;
        if (!soft) {
          target = k == a ? 1.0 : 0.0;
        } else {
          target = (1.0 - eps) * ((k == a ? la : 0.0) + (k == c ? 1.0 - la : 0.0)) + eps / static_cast<double>(K);
        }
        drow[k] = static_cast<float>((softmax - target) * grad_scale);
      }
    }
  }
}

}  // namespace

void softmax_cross_entropy(const Context&, Tensor losses, Tensor predicted, Tensor dlogits, const Tensor& logits,
                           const Tensor& labels, float grad_scale) {
  const char* op = "softmax_cross_entropy";
  int64_t B = 0, K = 0;
  check_common(op, losses, predicted, dlogits, logits, labels, &B, &K);
  const auto* lab = static_cast<const int32_t*>(labels.data);
  check_labels(op, "label", lab, B, K);
  xent_rows(B, K, logits.f32(), lab, nullptr, nullptr, 0.0, grad_scale, losses.f32(),
            static_cast<int32_t*>(predicted.data), dlogits.defined() ? dlogits.f32() : nullptr);
}

void softmax_cross_entropy_soft(const Context&, Tensor losses, Tensor predicted, Tensor dlogits,
                                const Tensor& logits, const Tensor& labels, const SoftTargets& targets,
                                float grad_scale) {
  const char* op = "softmax_cross_entropy_soft";
  int64_t B = 0, K = 0;
  check_common(op, losses, predicted, dlogits, logits, labels, &B, &K);
  if (!(targets.smoothing >= 0.0f && targets.smoothing < 1.0f)) {
    VIT_THROW(op, ": label smoothing ", targets.smoothing, " is outside [0, 1)");
  }
  if (targets.labels_b.defined() != targets.lambda.defined()) {
    VIT_THROW(op, ": labels_b and lambda come together (one is defined, the other not)");
  }
  const auto* lab = static_cast<const int32_t*>(labels.data);
  check_labels(op, "label", lab, B, K);
  const int32_t* lab_b = nullptr;
  const float* lam = nullptr;
  if (targets.labels_b.defined()) {
    require_cpu(op, "labels_b", targets.labels_b);
    require_shape(op, "labels_b", targets.labels_b, {B}, "int32 (B)");
    require_f32(op, "lambda", targets.lambda);
    require_shape(op, "lambda", targets.lambda, {B}, "(B)");
    lab_b = static_cast<const int32_t*>(targets.labels_b.data);
    lam = targets.lambda.f32();
    check_labels(op, "labels_b", lab_b, B, K);
    for (int64_t b = 0; b < B; ++b) {
      if (!(lam[b] >= 0.0f && lam[b] <= 1.0f)) VIT_THROW(op, ": lambda ", lam[b], " of sample ", b, " is outside [0, 1]");
    }
  }
  xent_rows(B, K, logits.f32(), lab, lab_b, lam, static_cast<double>(targets.smoothing), grad_scale, losses.f32(),
            static_cast<int32_t*>(predicted.data), dlogits.defined() ? dlogits.f32() : nullptr);
}

}  // namespace vit::kernels::cpu
