// LayerNorm on the CPU: rows in parallel, statistics accumulated in double.
//
// Forward, per row of C: mean and variance by two passes (the variance of
// x - mean, not E[x^2] - mean^2, which cancels badly when |mean| >> std),
// both summed in double; rstd = 1 / sqrt(var + eps) with the biased variance,
// as torch.nn.LayerNorm.
// Backward, per row, with xhat = (x - mean) rstd and g = dout * weight:
//   dinp += rstd * (g - mean(g) - xhat * mean(g * xhat))
// The parameter gradients are sums over rows; they are computed by blocks of
// columns, each block owned by one thread and walking the rows in order with
// double accumulators, so dweight/dbias are the same bit for bit whatever the
// thread count (the row-parallel dinp pass cannot own them without atomics).
// Inputs may have any leading shape, e.g. (B, T, C): rows M = B*T.
#include "kernels/layernorm.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu_checks.h"
#include "kernels/residual.h"

namespace vit::kernels::cpu {

using detail::require_f32;
using detail::require_numel;
using detail::require_same_rows;
using detail::require_shape;
using detail::rows_of;

namespace {

// Checks weight (C) and the statistics (M) against inp; returns C and M.
void check_common(const char* op, const Tensor& inp, const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                  int64_t* C, int64_t* M) {
  require_f32(op, "inp", inp);
  require_f32(op, "weight", weight);
  if (inp.ndim < 2) VIT_THROW(op, ": inp has shape ", inp.shape_str(), ", expected (M, C) or (B, T, C)");
  *C = inp.dim(-1);
  if (*C <= 0) VIT_THROW(op, ": inp has shape ", inp.shape_str(), ", its last dimension C must be positive");
  *M = rows_of(op, "inp", inp, *C, "C");
  require_shape(op, "weight", weight, {*C}, "(C)");
  require_f32(op, "mean", mean);
  require_f32(op, "rstd", rstd);
  require_numel(op, "mean", mean, *M, "one per row of inp");
  require_numel(op, "rstd", rstd, *M, "one per row of inp");
}

}  // namespace

void layernorm_forward(const Context&, Tensor out, Tensor mean, Tensor rstd, const Tensor& inp, const Tensor& weight,
                       const Tensor& bias, float eps) {
  const char* op = "layernorm_forward";
  int64_t C = 0, M = 0;
  check_common(op, inp, weight, mean, rstd, &C, &M);
  require_f32(op, "bias", bias);
  require_shape(op, "bias", bias, {C}, "(C)");
  require_f32(op, "out", out);
  rows_of(op, "out", out, C, "C");
  require_same_rows(op, "out", out, "inp", inp);
  VIT_CHECK(eps >= 0.0f, op, ": eps must be >= 0, got ", eps);

  const float* x = inp.f32();
  const float* w = weight.f32();
  const float* b = bias.f32();
  float* y = out.f32();
  float* mu = mean.f32();
  float* rs = rstd.f32();
#pragma omp parallel for schedule(static) if (M * C > detail::kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * C;
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += xr[c];
    const double row_mean = sum / static_cast<double>(C);
    double sq = 0.0;
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < C; ++c) {
      const double d = xr[c] - row_mean;
      sq += d * d;
    }
    const float mf = static_cast<float>(row_mean);
    const float sf = static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(C) + eps));
    mu[m] = mf;
    rs[m] = sf;
    float* yr = y + m * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mf) * sf * w[c] + b[c];
  }
}

void residual_layernorm_forward(const Context& ctx, Tensor sum, Tensor out, Tensor mean, Tensor rstd, const Tensor& a,
                                const Tensor& b, const Tensor& weight, const Tensor& bias, float eps) {
  const char* op = "residual_layernorm_forward";
  require_f32(op, "sum", sum);
  VIT_CHECK(sum.data != a.data && sum.data != b.data && sum.data != out.data, op,
            ": sum must not alias a, b or out");
  residual_add(ctx, sum, a, b);
  layernorm_forward(ctx, out, mean, rstd, sum, weight, bias, eps);
}

void layernorm_backward(const Context&, Tensor dinp, Tensor dweight, Tensor dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                        bool accumulate, Tensor dinp_colsum, bool colsum_accumulate) {
  const char* op = "layernorm_backward";
  int64_t C = 0, M = 0;
  check_common(op, inp, weight, mean, rstd, &C, &M);
  require_f32(op, "dout", dout);
  rows_of(op, "dout", dout, C, "C");
  require_same_rows(op, "dout", dout, "inp", inp);
  require_f32(op, "dinp", dinp);
  rows_of(op, "dinp", dinp, C, "C");
  require_same_rows(op, "dinp", dinp, "inp", inp);
  require_f32(op, "dweight", dweight);
  require_shape(op, "dweight", dweight, {C}, "(C)");
  require_f32(op, "dbias", dbias);
  require_shape(op, "dbias", dbias, {C}, "(C)");
  VIT_CHECK(dinp.data != dout.data, op, ": dinp must not alias dout (dinp accumulates)");
  if (dinp_colsum.defined()) {
    require_f32(op, "dinp_colsum", dinp_colsum);
    require_shape(op, "dinp_colsum", dinp_colsum, {C}, "(C)");
  }

  const float* x = inp.f32();
  const float* g = dout.f32();
  const float* w = weight.f32();
  const float* mu = mean.f32();
  const float* rs = rstd.f32();
  float* dx = dinp.f32();

  // dinp (M, C) +=, one row at a time.
#pragma omp parallel for schedule(static) if (M * C > detail::kParallelMin)
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * C;
    const float* gr = g + m * C;
    const float mf = mu[m], sf = rs[m];
    double sum_g = 0.0, sum_gx = 0.0;
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (int64_t c = 0; c < C; ++c) {
      const float gw = gr[c] * w[c];
      sum_g += gw;
      sum_gx += gw * ((xr[c] - mf) * sf);
    }
    const float mean_g = static_cast<float>(sum_g / static_cast<double>(C));
    const float mean_gx = static_cast<float>(sum_gx / static_cast<double>(C));
    float* dr = dx + m * C;
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (xr[c] - mf) * sf;
      dr[c] += sf * (gr[c] * w[c] - mean_g - xhat * mean_gx);
    }
  }

  // dweight (C) += sum_m dout * xhat; dbias (C) += sum_m dout (= when !accumulate).
  constexpr int64_t kCols = 16;
  const int64_t blocks = (C + kCols - 1) / kCols;
  float* dw = dweight.f32();
  float* db = dbias.f32();
#pragma omp parallel for schedule(static) if (M * C > detail::kParallelMin)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kCols;
    const int64_t width = std::min(kCols, C - c0);
    double acc_w[kCols] = {}, acc_b[kCols] = {};
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = x + m * C + c0;
      const float* gr = g + m * C + c0;
      const float mf = mu[m], sf = rs[m];
      for (int64_t j = 0; j < width; ++j) {
        acc_w[j] += gr[j] * ((xr[j] - mf) * sf);
        acc_b[j] += gr[j];
      }
    }
    for (int64_t j = 0; j < width; ++j) {
      dw[c0 + j] = (accumulate ? dw[c0 + j] : 0.0f) + static_cast<float>(acc_w[j]);
      db[c0 + j] = (accumulate ? db[c0 + j] : 0.0f) + static_cast<float>(acc_b[j]);
    }
  }

  // dinp_colsum (C) (+)= sum_m dinp (after the += above): the column sums
  // matmul_backward's bias gradient makes (the same function, the same bits).
  if (dinp_colsum.defined()) detail::add_column_sums(dinp_colsum.f32(), dx, M, C, colsum_accumulate);
}

}  // namespace vit::kernels::cpu
