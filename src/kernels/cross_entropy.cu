// Softmax cross-entropy with its gradient in one pass on the GPU (see
// cross_entropy.h).
//
// One warp per sample: the warp finds the max logit (and its lowest index,
// the prediction), the log-sum-exp, the loss, and writes the gradient
// (softmax - onehot) * grad_scale, all from one read of the row (K is 3 for
// Beans, 1000 for ImageNet heads; a row is at most a few KB and stays in L1
// between the passes). A label outside [0, K) (or a lambda outside [0, 1])
// yields a NaN loss, visible in the metrics, instead of an out-of-bounds read.
// Soft targets (cross_entropy.h) cost one more warp sum (the mean logit,
// only with label smoothing) and change only the target of the gradient.
//
// labels and predicted are int32 buffers (Tensor's dtype does not name
// integer types, so it is not checked for them).
#include <cmath>

#include "kernels/cross_entropy.h"
#include "kernels/cuda_common.cuh"

namespace vit::kernels {
namespace {

using namespace cuda_detail;

constexpr int kWarps = 4;

// labels_b and lambda null and eps 0: the hard-label formula. Otherwise the
// soft target of cross_entropy.h, with the mean logit from one more warp sum.
template <typename T>
__global__ void softmax_xent_kernel(float* __restrict__ losses, int32_t* __restrict__ predicted,
                                    T* __restrict__ dlogits, const T* __restrict__ logits,
                                    const int32_t* __restrict__ labels, const int32_t* __restrict__ labels_b,
                                    const float* __restrict__ lambda, float eps, int64_t B, int K,
                                    float grad_scale) {
  const int lane = threadIdx.x & 31;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (b >= B) return;
  const T* x = logits + b * K;
  float best = -INFINITY;
  int best_k = K;  // lowest index wins ties
  for (int k = lane; k < K; k += 32) {
    const float v = to_f(x[k]);
    if (best_k == K || v > best) {  // k ascends: the first of equal values stays
      best = v;
      best_k = k;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int ok = __shfl_xor_sync(0xffffffffu, best_k, o);
    if (ov > best || (ov == best && ok < best_k)) {
      best = ov;
      best_k = ok;
    }
  }
  float sum = 0.0f;
  for (int k = lane; k < K; k += 32) sum += __expf(to_f(x[k]) - best);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  const float lse = best + logf(sum);
  const int label = labels[b];
  const bool soft = labels_b != nullptr || eps != 0.0f;
  const int label_b = labels_b ? labels_b[b] : label;
  const float lam = lambda ? lambda[b] : 1.0f;
  const bool valid = label >= 0 && label < K && label_b >= 0 && label_b < K && lam >= 0.0f && lam <= 1.0f;
  float mean = 0.0f;
  if (eps != 0.0f) {
    for (int k = lane; k < K; k += 32) mean += to_f(x[k]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mean += __shfl_xor_sync(0xffffffffu, mean, o);
    mean /= static_cast<float>(K);
  }
  if (lane == 0) {
    float loss = NAN;
    if (valid && !soft) loss = lse - to_f(x[label]);
    if (valid && soft) {
      loss = lse - (1.0f - eps) * (lam * to_f(x[label]) + (1.0f - lam) * to_f(x[label_b])) - eps * mean;
    }
    losses[b] = loss;
    predicted[b] = best_k < K ? best_k : 0;
  }
  if (dlogits) {
    const float inv_sum = 1.0f / sum;
    const float uniform = eps / static_cast<float>(K);
    for (int k = lane; k < K; k += 32) {
      const float p = __expf(to_f(x[k]) - best) * inv_sum;
      float target;
      if (!soft) {
        target = k == label ? 1.0f : 0.0f;
      } else {
        target = (1.0f - eps) * ((k == label ? lam : 0.0f) + (k == label_b ? 1.0f - lam : 0.0f)) + uniform;
      }
      dlogits[b * K + k] = from_f<T>((p - target) * grad_scale);
    }
  }
}

void launch_xent(const Context& ctx, const char* op, Tensor losses, Tensor predicted, Tensor dlogits,
                 const Tensor& logits, const Tensor& labels, const int32_t* labels_b, const float* lambda, float eps,
                 float grad_scale) {
  const int64_t B = logits.dim(0);
  const int K = static_cast<int>(logits.dim(1));
  if (B == 0) return;
  cudaStream_t s = stream_of(ctx);
  const unsigned grid = static_cast<unsigned>((B + kWarps - 1) / kWarps);
  VIT_DTYPE_SWITCH(logits.dtype, T, {
    softmax_xent_kernel<T><<<grid, kWarps * 32, 0, s>>>(losses.f32(), predicted.as<int32_t>(),
                                                        dlogits.defined() ? dlogits.as<T>() : nullptr,
                                                        logits.as<T>(), labels.as<int32_t>(), labels_b, lambda, eps,
                                                        B, K, grad_scale);
  });
  VIT_CUDA_CHECK_LAUNCH();
  (void)op;
}

}  // namespace

namespace cuda {

namespace {
void check_xent_args(const Context& ctx, const char* op, const Tensor& losses, const Tensor& predicted,
                     const Tensor& dlogits, const Tensor& logits, const Tensor& labels) {
  gpu_of(ctx, op);
  check_gpu(losses, op, "losses");
  check_gpu(predicted, op, "predicted");
  check_gpu(logits, op, "logits");
  check_gpu(labels, op, "labels");
  VIT_CHECK(logits.ndim == 2, op, ": logits must be (B, K), got ", logits.shape_str());
  const int64_t B = logits.dim(0);
  const int K = static_cast<int>(logits.dim(1));
  check_dtype(losses, DType::F32, op, "losses");
  check_numel(losses, B, op, "losses");
  check_numel(predicted, B, op, "predicted");
  check_numel(labels, B, op, "labels");
  if (dlogits.defined()) {
    check_gpu(dlogits, op, "dlogits");
    check_dtype(dlogits, logits.dtype, op, "dlogits");
    check_numel(dlogits, B * K, op, "dlogits");
  }
}
}  // namespace

void softmax_cross_entropy(const Context& ctx, Tensor losses, Tensor predicted, Tensor dlogits,
                           const Tensor& logits, const Tensor& labels, float grad_scale) {
  const char* op = "softmax_cross_entropy";
  check_xent_args(ctx, op, losses, predicted, dlogits, logits, labels);
  launch_xent(ctx, op, losses, predicted, dlogits, logits, labels, nullptr, nullptr, 0.0f, grad_scale);
}

void softmax_cross_entropy_soft(const Context& ctx, Tensor losses, Tensor predicted, Tensor dlogits,
                                const Tensor& logits, const Tensor& labels, const SoftTargets& targets,
                                float grad_scale) {
  const char* op = "softmax_cross_entropy_soft";
  check_xent_args(ctx, op, losses, predicted, dlogits, logits, labels);
  VIT_CHECK(targets.smoothing >= 0.0f && targets.smoothing < 1.0f, op, ": label smoothing ", targets.smoothing,
            " is outside [0, 1)");
  VIT_CHECK(targets.labels_b.defined() == targets.lambda.defined(), op,
            ": labels_b and lambda come together (one is defined, the other not)");
  const int32_t* labels_b = nullptr;
  const float* lambda = nullptr;
  if (targets.labels_b.defined()) {
    const int64_t B = logits.dim(0);
    check_gpu(targets.labels_b, op, "labels_b");
    check_numel(targets.labels_b, B, op, "labels_b");
    check_gpu(targets.lambda, op, "lambda");
    check_dtype(targets.lambda, DType::F32, op, "lambda");
    check_numel(targets.lambda, B, op, "lambda");
    labels_b = targets.labels_b.as<int32_t>();
    lambda = targets.lambda.f32();
  }
  launch_xent(ctx, op, losses, predicted, dlogits, logits, labels, labels_b, lambda, targets.smoothing, grad_scale);
}

}  // namespace cuda
}  // namespace vit::kernels
