// Session 23, call E: which form of the GELU forward with fc1's bias (gelu(x + b), b per column) keeps the
// unbiased pass's speed? A measurement, not product code: it includes src/kernels/gelu.cu for its GELU
// arithmetic and plain kernel and links the project's libraries (build line in call_e.sh).
// Forms (all the plain pass's grid-stride sweep, a thread count that is a multiple of the row's packs, so each
// thread stays in one column): the bias as 8 floats in registers (18c5032's form), as one 16-byte pack
// converted per use, and re-read from L1 every iteration.
#include <algorithm>
#include <cstdio>
#include <vector>

#include "kernels/gelu.cu"

namespace vit::kernels {
namespace {
using namespace cuda_detail;

template <int kForm>  // 0: floats, 1: pack, 2: re-read
__global__ void biased(bf16* __restrict__ out, const bf16* __restrict__ inp, const bf16* __restrict__ bias,
                       int64_t packs, int64_t row_packs, int64_t threads) {
  constexpr int P = Pack<bf16>::N;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (tid >= threads) return;
  const bf16* bcol = bias + (tid % row_packs) * P;
  const Pack<bf16> bp = load_pack(bcol);
  float bf[P];
#pragma unroll
  for (int j = 0; j < P; ++j) bf[j] = to_f(bp.v[j]);
  for (int64_t i = tid; i < packs; i += threads) {
    const Pack<bf16> x = load_pack(inp + i * P);
    Pack<bf16> b2;
    if constexpr (kForm == 2) b2 = load_pack(bcol);
    Pack<bf16> y;
#pragma unroll
    for (int j = 0; j < P; ++j) {
      float b;
      if constexpr (kForm == 0) b = bf[j];
      else if constexpr (kForm == 1) b = to_f(bp.v[j]);
      else b = to_f(b2.v[j]);
      y.v[j] = from_f<bf16>(gelu_f<bf16>(to_f(x.v[j]) + b));
    }
    store_pack(out + i * P, y);
  }
}

}  // namespace
}  // namespace vit::kernels

using namespace vit::kernels;
using namespace vit::kernels::cuda_detail;

#define CK(x)                                                                          \
  do {                                                                                 \
    cudaError_t e = (x);                                                               \
    if (e != cudaSuccess) {                                                            \
      std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e));                     \
      return 1;                                                                        \
    }                                                                                  \
  } while (0)

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  for (int64_t B : {32, 256}) {
    const int64_t C = 3072, rows = B * 197, n = rows * C, P = 8, packs = n / P, row_packs = C / P;
    bf16 *x, *y, *b;
    CK(cudaMalloc(&x, n * 2));
    CK(cudaMalloc(&y, n * 2));
    CK(cudaMalloc(&b, C * 2));
    std::vector<bf16> h(n);
    for (int64_t i = 0; i < n; ++i) h[i] = __float2bfloat16(static_cast<float>((i * 7919) % 8001) / 1000.0f - 4.0f);
    CK(cudaMemcpy(x, h.data(), n * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(b, h.data(), C * 2, cudaMemcpyHostToDevice));
    const int64_t cap = static_cast<int64_t>(grid_for(packs, 256, sms)) * 256;
    const int64_t threads = std::max<int64_t>(1, cap / row_packs) * row_packs;
    const unsigned grid = static_cast<unsigned>((threads + 255) / 256);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<bf16> ref(n), got(n);
    const char* names[] = {"plain (no bias)", "bias as 8 floats", "bias as a pack", "bias re-read"};
    for (int form = -1; form < 3; ++form) {
      auto launch = [&] {
        if (form < 0) gelu_forward_kernel<bf16, true><<<grid_for(packs, 256, sms), 256>>>(y, x, n);
        if (form == 0) biased<0><<<grid, 256>>>(y, x, b, packs, row_packs, threads);
        if (form == 1) biased<1><<<grid, 256>>>(y, x, b, packs, row_packs, threads);
        if (form == 2) biased<2><<<grid, 256>>>(y, x, b, packs, row_packs, threads);
      };
      for (int r = 0; r < 20; ++r) launch();
      CK(cudaGetLastError());
      std::vector<float> trials;
      for (int t = 0; t < 5; ++t) {
        CK(cudaEventRecord(e0));
        for (int r = 0; r < 50; ++r) launch();
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        trials.push_back(ms / 50);
      }
      std::sort(trials.begin(), trials.end());
      CK(cudaMemcpy(form == 0 ? ref.data() : got.data(), y, n * 2, cudaMemcpyDeviceToHost));
      long long differ = 0;
      if (form > 0) {
        for (int64_t i = 0; i < n; ++i) differ += __bfloat162float(got[i]) != __bfloat162float(ref[i]);
      }
      std::printf("batch %lld %-18s %.4f ms (min %.4f)  %.0f GB/s%s\n", (long long)B, names[form + 1], trials[2],
                  trials[0], 4.0 * n / (trials[2] * 1e6),
                  form > 0 ? (differ ? "  OTHER BITS than the floats form" : "  same bits as the floats form") : "");
    }
    CK(cudaFree(x));
    CK(cudaFree(y));
    CK(cudaFree(b));
  }
  return 0;
}
