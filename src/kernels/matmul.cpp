// Linear layers on the CPU: OpenBLAS sgemm for the products, OpenMP for the
// bias, the GELU epilogue and the bias gradient.
//
// Everything is row-major: inp (M, K) @ weight (N, K)^T is sgemm(NoTrans,
// Trans) with the weight read in its stored layout, no transposed copy.
// Tricks:
// - The bias is copied into the output rows first and the product added on
//   top with beta = 1: one pass over the output instead of a product pass and
//   a bias pass.
// - dweight accumulates through beta = 1, exactly the (+=) of the contract.
// - sgemm is only ever called from outside OpenMP regions: Debian's OpenBLAS
//   is the pthreads build, whose own threads inside an OpenMP team would
//   oversubscribe the cores. set_cpu_threads() sizes both pools.
// - dbias sums columns by blocks of columns (detail::add_column_sums): the
//   same bit for bit whatever the thread count.
// Inputs may have any leading shape, e.g. (B, T, C): rows M = B*T.
#include "kernels/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/cpu_checks.h"
#include "kernels/gelu.h"

namespace vit::kernels::cpu {

using detail::require_f32;
using detail::require_same_rows;
using detail::require_shape;
using detail::rows_of;

namespace {

// The weight fixes N and K; it must be a plain (N, K) matrix.
void check_weight(const char* op, const Tensor& weight) {
  require_f32(op, "weight", weight);
  if (weight.ndim != 2 || weight.shape[0] <= 0 || weight.shape[1] <= 0) {
    VIT_THROW(op, ": weight has shape ", weight.shape_str(), ", expected a non-empty (N, K) matrix");
  }
}

// CBLAS takes int sizes.
void check_blas_sizes(const char* op, int64_t M, int64_t N, int64_t K) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (M > kMax || N > kMax || K > kMax) {
    VIT_THROW(op, ": M = ", M, ", N = ", N, ", K = ", K, " exceed the BLAS int range");
  }
}

}  // namespace

void matmul_forward(const Context& ctx, Tensor out, Tensor pre_gelu, const Tensor& inp, const Tensor& weight,
                    const Tensor& bias, const Tensor& residual) {
  const char* op = "matmul_forward";
  check_weight(op, weight);
  const int64_t N = weight.shape[0], K = weight.shape[1];
  require_f32(op, "inp", inp);
  require_f32(op, "out", out);
  const int64_t M = rows_of(op, "inp", inp, K, "K (weight's second dimension)");
  rows_of(op, "out", out, N, "N (weight's first dimension)");
  require_same_rows(op, "out", out, "inp", inp);
  if (bias.defined()) {
    require_f32(op, "bias", bias);
    require_shape(op, "bias", bias, {N}, "(N)");
  }
  if (pre_gelu.defined()) {
    require_f32(op, "pre_gelu", pre_gelu);
    rows_of(op, "pre_gelu", pre_gelu, N, "N (weight's first dimension)");
    require_same_rows(op, "pre_gelu", pre_gelu, "inp", inp);
    VIT_CHECK(pre_gelu.data != out.data, op, ": pre_gelu and out must be different buffers");
  }
  if (residual.defined()) {
    require_f32(op, "residual", residual);
    rows_of(op, "residual", residual, N, "N (weight's first dimension)");
    require_same_rows(op, "residual", residual, "inp", inp);
    VIT_CHECK(!pre_gelu.defined(), op, ": residual and pre_gelu (the GELU epilogue) do not go together");
    VIT_CHECK(residual.data != out.data, op, ": residual and out must be different buffers");
  }
  VIT_CHECK(out.data != inp.data, op, ": out must not alias inp");
  check_blas_sizes(op, M, N, K);
  if (M == 0) return;

  // The product lands in pre_gelu when the GELU epilogue follows, else in out.
  float* target = pre_gelu.defined() ? pre_gelu.f32() : out.f32();
  float beta = 0.0f;
  if (bias.defined()) {
    const float* b = bias.f32();
#pragma omp parallel for schedule(static) if (M * N > detail::kParallelMin)
    for (int64_t m = 0; m < M; ++m) std::memcpy(target + m * N, b, static_cast<size_t>(N) * sizeof(float));
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), 1.0f, inp.f32(), static_cast<int>(K), weight.f32(), static_cast<int>(K), beta,
              target, static_cast<int>(N));
  if (pre_gelu.defined()) cpu::gelu_forward(ctx, out, pre_gelu);
  if (residual.defined()) {  // out = residual + out, one fp32 add as residual_add does
    float* o = out.f32();
    const float* r = residual.f32();
    const int64_t n = M * N;
#pragma omp parallel for schedule(static) if (n > detail::kParallelMin)
    for (int64_t i = 0; i < n; ++i) o[i] = r[i] + o[i];
  }
}

void matmul_backward(const Context&, Tensor dinp, Tensor dweight, Tensor dbias, const Tensor& dout,
                     const Tensor& inp, const Tensor& weight, bool accumulate) {
  const char* op = "matmul_backward";
  check_weight(op, weight);
  const int64_t N = weight.shape[0], K = weight.shape[1];
  require_f32(op, "dout", dout);
  const int64_t M = rows_of(op, "dout", dout, N, "N (weight's first dimension)");
  const bool wgrad = dweight.defined();
  VIT_CHECK(wgrad || !dbias.defined(), op, ": dbias comes with dweight (an input-gradient-only call has neither)");
  VIT_CHECK(wgrad || dinp.defined(), op, ": nothing to compute (dinp and dweight are both undefined)");
  if (wgrad) {
    require_f32(op, "inp", inp);
    rows_of(op, "inp", inp, K, "K (weight's second dimension)");
    require_same_rows(op, "dout", dout, "inp", inp);
    require_f32(op, "dweight", dweight);
    require_shape(op, "dweight", dweight, {N, K}, "(N, K)");
  }
  if (dbias.defined()) {
    require_f32(op, "dbias", dbias);
    require_shape(op, "dbias", dbias, {N}, "(N)");
  }
  if (dinp.defined()) {
    require_f32(op, "dinp", dinp);
    rows_of(op, "dinp", dinp, K, "K (weight's second dimension)");
    require_same_rows(op, "dinp", dinp, "dout", dout);
    VIT_CHECK(dinp.data != dout.data, op, ": dinp must not alias dout");
  }
  check_blas_sizes(op, M, N, K);
  if (M == 0) {  // no rows: nothing to add, and an assignment is zero
    if (!accumulate && wgrad) std::fill(dweight.f32(), dweight.f32() + N * K, 0.0f);
    if (!accumulate && dbias.defined()) std::fill(dbias.f32(), dbias.f32() + N, 0.0f);
    return;
  }
  const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);

  // The weight gradient first: dinp may be inp itself (matmul.h).
  if (wgrad) {
    // dweight (N, K) += dout^T (N, M) @ inp (M, K)   (= when !accumulate)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, k, m, 1.0f, dout.f32(), n, inp.f32(), k,
                accumulate ? 1.0f : 0.0f, dweight.f32(), k);
    // dbias (N) += column sums of dout (M, N)
    if (dbias.defined()) detail::add_column_sums(dbias.f32(), dout.f32(), M, N, accumulate);
  }
  // dinp (M, K) = dout (M, N) @ weight (N, K)
  if (dinp.defined()) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, k, n, 1.0f, dout.f32(), n, weight.f32(), k, 0.0f,
                dinp.f32(), k);
  }
}

}  // namespace vit::kernels::cpu
