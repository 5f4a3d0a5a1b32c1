// Linear layers on the GPU through cuBLASLt (see matmul.h for the contract).
//
// Row-major to column-major: cuBLASLt is column-major, and a row-major
// (R, C) matrix is the column-major (C, R) matrix with leading dimension C,
// i.e. its transpose. So with x (M, K), W (N, K), y (M, N), all row-major:
//   forward   y^T  (N, M) = W  (N, K) . x^T (K, M)   A = W  (op T), B = x     (op N)
//   dinp      dx^T (K, M) = W^T(K, N) . dy^T (N, M)  A = W  (op N), B = dy    (op N)
//   dweight   dW^T (K, N) = x^T(K, M) . dy  (M, N)   A = x  (op N), B = dy    (op T)
// The bias of the forward is a per-row vector of y^T: cuBLASLt's BIAS
// epilogue. The bias gradient is the sum of dy over M (column_sum.cuh, or
// fused into the kernel that made dy, e.g. gelu_backward); not cuBLASLt's
// BGRADB epilogue, with which the heuristic picks slower weight-gradient
// kernels (-25% at batch 32, -24% at batch 256 on an H200).
//
// Mixed precision: A/B in bf16 or fp16, dweight as fp32 C/D with beta = 1
// (cuBLASLt supports A/B 16-bit with C/D fp32, compute 32F), so the master
// gradient accumulates in fp32 without a cast pass. fp32 uses compute 32F,
// or 32F_FAST_TF32 when GpuHandles::tf32 is set.
//
// GELU: the epilogue's GELU in cuBLASLt is the tanh approximation, while the
// model needs the exact erf form (Hugging Face ViT). So the GEMM writes
// pre_gelu with the BIAS epilogue and gelu.cu's kernel makes out from it.
// (Measured on an H200: cuBLASLt's GELU-epilogue kernels run ~30% slower than
// its plain ones, and cuDNN's fused matmul + exact GELU graphs slower still,
// so neither beats the plain GEMM plus gelu.cu's pass; PERF_NOTES.md.) The
// BIAS epilogue stays on fc1's GEMM: without it the GEMM ran 8% faster at
// batch 256 on an H200 held at its power limit (bench_gemm_algos --sustain),
// but the GELU forward that then added the bias took 0.205 against 0.172
// ms, and the step gained nothing (PERF_NOTES.md, twenty-third session).
//
// Plans: descriptors, layouts and the algorithm are cached per (shape,
// leading dims, types, epilogue, pointer alignment); a steady-state call only
// sets the bias pointer and launches. Nothing here synchronises, except the
// first call of a plan when tuning is on (GpuHandles::gemm_autotune).
//
// Residual: the forward may add a residual input (matmul.h): it is C with
// beta = 1 and D its own buffer, so the block's residual add costs the
// epilogue one read instead of a pass of its own (read two, write one).
//
// Tuning among bit-identical algorithms. The heuristic's first answer is
// not always the fastest (up to 8% slower for some batch-32 GEMMs, 2.4% of
// the step's GEMM time; bench_gemm_algos). On a plan's first call, when it
// overwrites its output (beta = 0: forward and input gradient; or beta = 1
// with a separate C, the residual forward) and no graph
// is being captured, each of the heuristic's candidates runs on the call's
// own operands, in place, is timed, and its output is hashed (every bit,
// order-free); only candidates whose hash equals the first answer's are
// eligible, and the fastest of those is kept. The candidates are only the
// single-pass ones (no split-K), and only GEMMs of at least 1 GFLOP are
// tuned: one call's hash of a small 16-bit output can miss a different
// summation order (a test of a small model saw it happen with split-K
// candidates), so the hash alone is not trusted. With both rules, tuning is
// meant to change the speed and not the bits: training gave the untuned
// bits in every run measured (ViT-B/16 bf16 and fp32, and the GPU test
// suites), and ranks that pick different candidates still agree. The weight
// gradients (beta = 1 when they accumulate) keep the first answer.
//
// Beyond the heuristic's list (at most 8 answers for these shapes), the first
// answer's algorithm in its other single-pass configurations (every tile it
// offers, every custom option; its stages, cluster shape and swizzling kept;
// cublasLtMatmulAlgoCheck filters, and none may need more workspace than the
// list's answers) is screened with two timed calls each, and the 8 fastest
// join the list for the timed, hashed comparison above. bench_gemm_algos
// --search found such configurations 1.4% (batch 32) and 1.1% (batch 256) of
// the step's GEMM time faster than the list's best, with the first's bits;
// in the step +1.0-1.5% / +0.8-1.2% images/s at batch 32 / 256 (H200, one
// binary, alternating runs), for 20-30 s more start-up (AlgoCheck and a few
// launches for each of ~500-900 configurations a plan), which the tuning
// cache below pays once. A two-stage screening (tiles first, then the custom
// options of the fastest tiles: 1.5-1.8k configurations, ~4 s) chose worse:
// +0.2% / -0.6% (s16/g_staged_wide). On by default in the spec
// (plugin.gemm_autotune_wide), off in a bare GpuRuntime.
//
// Tuning cache (plugin.gemm_tuning_cache, gemm_tuning_cache.h): a tuned
// plan's choice is put in the cache under the GPU model, the cuBLASLt
// version and the plan's key, and saved by the run. A later plan with the
// same key, found by a tuning of the same kind (wide or list only), skips the
// heuristic's list and the screening: the cached algorithm must pass
// cublasLtMatmulAlgoCheck, and on the first call it runs once beside the
// heuristic's first answer under the same hashed comparison; it is kept when
// the bits agree (its speed was measured when it was cached), and otherwise
// left out (counted; the plan keeps the first answer).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/column_sum.cuh"
#include "kernels/cuda_common.cuh"
#include "kernels/gelu.h"
#include "kernels/matmul.h"

namespace vit {

struct LtKey {
  int64_t m, n, k, lda, ldb, ldc;
  int32_t transa, transb, ab_type, cd_type, compute, epilogue;
  int32_t align_a, align_b, align_c, align_bias;
  int32_t accumulate;  // beta != 0 (tuned only with a separate C: the output never feeds itself)
  int32_t separate_c;  // C is its own input buffer, not D
  bool operator==(const LtKey& o) const { return std::memcmp(this, &o, sizeof(LtKey)) == 0; }
};
struct LtKeyHash {
  size_t operator()(const LtKey& k) const {
    const auto* p = reinterpret_cast<const unsigned char*>(&k);
    size_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(LtKey); ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
  }
};
struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;  // bytes `algo` needs (the heuristic's answer), taken from h.gemm_workspace
  bool has_algo = false;
  // The heuristic's other candidates and their workspaces, until the first
  // call tunes (then cleared).
  std::vector<cublasLtMatmulAlgo_t> candidates;
  std::vector<size_t> candidate_workspace;
  // Other configurations of the first answer's algorithm, screened first.
  std::vector<cublasLtMatmulAlgo_t> variants;
  std::vector<size_t> variant_workspace;
  bool tuned = false;
  bool from_cache = false;  // candidates[0] is the tuning cache's choice (see the top of this file)
  std::string cache_key;    // the plan's key in the tuning cache ("" without one, or untunable)
};

static_assert(sizeof(cublasLtMatmulAlgo_t) == sizeof(GemmTuningEntry::algo), "cuBLASLt's algorithm is 8 words");

// A plan's key in the tuning cache: every field of LtKey, in order.
std::string cache_key(const LtKey& k) {
  return str_cat(k.m, ",", k.n, ",", k.k, ",", k.lda, ",", k.ldb, ",", k.ldc, ",", k.transa, ",", k.transb, ",",
                 k.ab_type, ",", k.cd_type, ",", k.compute, ",", k.epilogue, ",", k.align_a, ",", k.align_b, ",",
                 k.align_c, ",", k.align_bias, ",", k.accumulate, ",", k.separate_c);
}
struct MatmulPlanCache {
  std::mutex mu;
  std::unordered_map<LtKey, LtPlan, LtKeyHash> plans;
};

void blas_workspace(GpuHandles& h, cudaStream_t stream) {
  void* ws = h.gemm_workspace.get(GpuHandles::kGemmWorkspaceBytes, stream);
  if (ws == h.blas_workspace_set) return;
  VIT_CUBLAS_CHECK(cublasSetWorkspace(h.blas, ws, GpuHandles::kGemmWorkspaceBytes));
  h.blas_workspace_set = ws;
}

std::string gemm_tuning_note(const GpuHandles& h) {
  if (h.gemm_tuned == 0 && h.gemm_cache_hits == 0 && h.gemm_cache_rejected == 0) return "";
  const std::string wide = h.gemm_variants_screened == 0
                               ? std::string()
                               : " (" + std::to_string(h.gemm_tuned_variant) + " a configuration beyond its list; " +
                                     std::to_string(h.gemm_variants_screened) + " screened)";
  std::string note = "GEMM tuning: " + std::to_string(h.gemm_tuned) + " cuBLASLt plans tuned, " +
                     std::to_string(h.gemm_tuned_other) + " kept another algorithm than the heuristic's first" +
                     wide + ", " + std::to_string(h.gemm_candidates_other_bits) +
                     " candidates left out for other output bits";
  if (h.gemm_cache) {
    note += str_cat("; cache ", h.gemm_cache->path(), ": ", h.gemm_cache_hits, " plans from it");
    if (h.gemm_cache_rejected > 0) {
      note += str_cat(", ", h.gemm_cache_rejected,
                      " cached choices left out (refused by cuBLASLt or other bits; delete the file to tune afresh)");
    }
  }
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.1f", h.gemm_tuning_seconds);
  return note + "; " + secs + " s choosing algorithms";
}

void destroy_matmul_plans(MatmulPlanCache* cache) {
  if (!cache) return;
  for (auto& kv : cache->plans) {
    LtPlan& p = kv.second;
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  }
  delete cache;
}

namespace kernels {
namespace {

using namespace cuda_detail;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int32_t pointer_alignment(const void* p) {
  const auto u = reinterpret_cast<uintptr_t>(p);
  int32_t a = 256;
  while (a > 1 && (u % a) != 0) a >>= 1;
  return a;
}

// One column-major GEMM D = alpha op(A) op(B) + beta C (C = D in place,
// unless C is given: then an input of D's shape and type that D does not
// overwrite).
struct LtCall {
  int64_t m, n, k, lda, ldb, ldc;
  bool transa, transb;
  DType ab, cd;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* A;
  const void* B;
  void* D;
  void* bias = nullptr;  // BIAS: input vector (m)
  float beta = 0.0f;
  const void* C = nullptr;  // null: C = D
  const void* c_in() const { return C ? C : D; }
};

// D (m, n; column-major, leading dimension ldc) += bias (m) on every column.
template <typename T>
__global__ void add_bias_columns_kernel(T* __restrict__ D, const T* __restrict__ bias, int64_t m, int64_t n,
                                        int64_t ldc) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < m * n; idx += stride) {
    const int64_t i = idx % m, j = idx / m;
    D[j * ldc + i] = from_f<T>(to_f(D[j * ldc + i]) + to_f(bias[i]));
  }
}

// When cuBLASLt offers no algorithm (seen for shapes whose leading dimensions
// break its alignment rules, e.g. a 3-class head in 16-bit): plain
// cublasGemmEx, which takes any shape, plus a bias kernel.
void gemm_ex_fallback(GpuHandles& h, const LtCall& c, cublasComputeType_t compute) {
  const float alpha = 1.0f;
  blas_workspace(h, h.stream);
  if (c.C && c.C != c.D && c.beta != 0.0f) {  // cublasGemmEx has no separate C: D = C, then D += ...
    VIT_CUDA_CHECK(cudaMemcpy2DAsync(c.D, static_cast<size_t>(c.ldc) * dtype_size(c.cd), c.C,
                                     static_cast<size_t>(c.ldc) * dtype_size(c.cd),
                                     static_cast<size_t>(c.m) * dtype_size(c.cd), static_cast<size_t>(c.n),
                                     cudaMemcpyDeviceToDevice, h.stream));
  }
  VIT_CUBLAS_CHECK(cublasGemmEx(h.blas, c.transa ? CUBLAS_OP_T : CUBLAS_OP_N, c.transb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                static_cast<int>(c.m), static_cast<int>(c.n), static_cast<int>(c.k), &alpha, c.A,
                                cuda_type(c.ab), static_cast<int>(c.lda), c.B, cuda_type(c.ab),
                                static_cast<int>(c.ldb), &c.beta, c.D, cuda_type(c.cd), static_cast<int>(c.ldc),
                                compute, CUBLAS_GEMM_DEFAULT));
  if (c.epilogue == CUBLASLT_EPILOGUE_BIAS) {
    VIT_DTYPE_SWITCH(c.cd, T,
                     add_bias_columns_kernel<T><<<grid_for(c.m * c.n, 256, h.num_sms), 256, 0, h.stream>>>(
                         static_cast<T*>(c.D), static_cast<const T*>(c.bias), c.m, c.n, c.ldc));
    VIT_CUDA_CHECK_LAUNCH();
  }
}

// One pass over k per output tile: no split-K slices and no reduction
// scheme. Candidates of this kind are what tuning chooses among: the hash of
// one call's 16-bit output can miss a different summation order (most
// elements round alike), and split-K is where the order differs. For the
// ViT-B/16 GEMMs every single-pass candidate had the first's bits, in bf16
// and fp32; the fp32 candidates with other bits were all split-K ones.
bool single_pass(const cublasLtMatmulAlgo_t& algo) {
  int32_t splitk = 1;
  uint32_t reduction = 0;
  size_t written = 0;
  if (cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk),
                                           &written) != CUBLAS_STATUS_SUCCESS ||
      cublasLtMatmulAlgoConfigGetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &reduction,
                                           sizeof(reduction), &written) != CUBLAS_STATUS_SUCCESS) {
    return false;
  }
  return splitk <= 1 && reduction == CUBLASLT_REDUCTION_SCHEME_NONE;
}

// An order-free hash of every 32-bit word of a buffer (a GEMM's output):
// each word is mixed with its index and the mixes are summed modulo 2^64, so
// the atomics' order cannot change the result and any flipped bit changes it
// (up to a 2^-64 chance).
__global__ void hash_words_kernel(unsigned long long* __restrict__ out, const uint32_t* __restrict__ words,
                                  int64_t n) {
  unsigned long long acc = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    unsigned long long z = (static_cast<unsigned long long>(words[i]) << 32) ^ static_cast<unsigned long long>(i);
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    acc += z ^ (z >> 31);
  }
  atomicAdd(out, acc);
}

uint64_t hash_output(GpuHandles& h, cudaStream_t stream, const void* D, size_t bytes) {
  auto* acc = static_cast<unsigned long long*>(h.scratch_small.get(sizeof(unsigned long long), stream));
  VIT_CUDA_CHECK(cudaMemsetAsync(acc, 0, sizeof(unsigned long long), stream));
  const int64_t n = static_cast<int64_t>(bytes / 4);
  hash_words_kernel<<<grid_for(n, 256, h.num_sms), 256, 0, stream>>>(acc, static_cast<const uint32_t*>(D), n);
  VIT_CUDA_CHECK_LAUNCH();
  unsigned long long host = 0;
  VIT_CUDA_CHECK(cudaMemcpyAsync(&host, acc, sizeof host, cudaMemcpyDeviceToHost, stream));
  VIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

// The other single-pass configurations of the heuristic's first answer (see
// the top of this file): each tile the algorithm offers with each custom
// option, its stages, cluster shape and swizzling kept, that
// cublasLtMatmulAlgoCheck accepts with at most ws_cap bytes of workspace and
// that is not one of the heuristic's answers.
void add_variants(GpuHandles& h, LtPlan& p, int found, const cublasLtMatmulHeuristicResult_t* results, size_t ws_cap) {
  const cublasLtMatmulAlgo_t& base = results[0].algo;
  size_t bytes = 0;
  if (cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_TILE_IDS, nullptr, 0, &bytes) !=
          CUBLAS_STATUS_SUCCESS ||
      bytes == 0) {
    return;
  }
  std::vector<uint32_t> tiles(bytes / sizeof(uint32_t));
  if (cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_TILE_IDS, tiles.data(), bytes, &bytes) !=
      CUBLAS_STATUS_SUCCESS) {
    return;
  }
  int32_t custom_max = 0;
  if (cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX, &custom_max, sizeof(custom_max),
                                        &bytes) != CUBLAS_STATUS_SUCCESS) {
    custom_max = 0;
  }
  custom_max = std::min(custom_max, 15);
  for (uint32_t tile : tiles) {
    for (int32_t custom = 0; custom <= custom_max; ++custom) {
      cublasLtMatmulAlgo_t a = base;
      const int32_t one = 1;
      const uint32_t none = CUBLASLT_REDUCTION_SCHEME_NONE;
      if (cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile)) ||
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &custom, sizeof(custom)) ||
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &one, sizeof(one)) ||
          cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &none, sizeof(none))) {
        continue;
      }
      bool listed = false;
      for (int i = 0; i < found && !listed; ++i) listed = std::memcmp(&a, &results[i].algo, sizeof(a)) == 0;
      if (listed) continue;  // (split-K 1 and no reduction scheme were set above: single pass)
      cublasLtMatmulHeuristicResult_t chk{};
      if (cublasLtMatmulAlgoCheck(h.lt, p.desc, p.a, p.b, p.c, p.c, &a, &chk) != CUBLAS_STATUS_SUCCESS ||
          chk.state != CUBLAS_STATUS_SUCCESS || chk.workspaceSize > ws_cap) {
        continue;
      }
      p.variants.push_back(a);
      p.variant_workspace.push_back(chk.workspaceSize);
    }
  }
}

// A plan whose heuristic's first answer is p.algo takes the tuning cache's
// choice `e` (see the top of this file): nothing to check when it is the
// first answer; otherwise a single-pass algorithm that
// cublasLtMatmulAlgoCheck accepts becomes the one candidate that tune_plan
// compares with the first answer's bits on the first call; anything else is
// left out (counted) and the plan keeps the first answer.
void take_cached(GpuHandles& h, LtPlan& p, const GemmTuningEntry& e) {
  cublasLtMatmulAlgo_t a;
  std::memcpy(&a, e.algo.data(), sizeof(a));
  cublasLtMatmulHeuristicResult_t chk{};
  if (std::memcmp(&a, &p.algo, sizeof(a)) == 0) {
    p.tuned = true;
    ++h.gemm_cache_hits;
  } else if (single_pass(a) &&
             cublasLtMatmulAlgoCheck(h.lt, p.desc, p.a, p.b, p.c, p.c, &a, &chk) == CUBLAS_STATUS_SUCCESS &&
             chk.state == CUBLAS_STATUS_SUCCESS && chk.workspaceSize <= GpuHandles::kGemmWorkspaceBytes) {
    p.candidates.push_back(a);
    p.candidate_workspace.push_back(chk.workspaceSize);
    p.from_cache = true;
  } else {
    p.tuned = true;
    ++h.gemm_cache_rejected;
  }
}

// The first call of a tunable plan (see the top of this file): keeps the
// fastest candidate whose output has the first answer's bits. Leaves the
// output written (by the last candidate run, all of them bit-identical to
// the first or overwritten by the caller's launch right after).
void tune_plan(GpuHandles& h, cudaStream_t stream, const LtCall& c, LtPlan& p) {
  constexpr int kWarm = 1, kTimed = 5;
  const size_t out_bytes = static_cast<size_t>(c.ldc) * static_cast<size_t>(c.n) * dtype_size(c.cd);
  const float alpha = 1.0f;
  std::vector<cublasLtMatmulAlgo_t> all{p.algo};
  all.insert(all.end(), p.candidates.begin(), p.candidates.end());
  std::vector<size_t> all_ws{p.workspace};
  all_ws.insert(all_ws.end(), p.candidate_workspace.begin(), p.candidate_workspace.end());
  const size_t listed = all.size();
  // Every candidate runs with the workspace it asked for (the arena grows to
  // the largest, once, before the first launch; variants ask for no more).
  void* ws = h.gemm_workspace.get(*std::max_element(all_ws.begin(), all_ws.end()), stream);
  auto run = [&](const cublasLtMatmulAlgo_t& a, size_t a_ws) {
    return cublasLtMatmul(h.lt, p.desc, &alpha, c.A, p.a, c.B, p.b, &c.beta, c.c_in(), p.c, c.D, p.c, &a, ws, a_ws,
                          stream);
  };
  auto launch = [&](size_t i) { return run(all[i], all_ws[i]); };
  cudaEvent_t t0 = nullptr, t1 = nullptr;
  VIT_CUDA_CHECK(cudaEventCreate(&t0));
  VIT_CUDA_CHECK(cudaEventCreate(&t1));
  if (!p.variants.empty()) {
    // Screening: one warm-up and two timed calls of each variant, events
    // recorded back to back and read after one synchronisation; the 8
    // fastest that ran join the list.
    constexpr int kScreened = 2;
    constexpr size_t kKeep = 8;
    const size_t nv = p.variants.size();
    std::vector<cudaEvent_t> ev(2 * nv, nullptr);
    std::vector<char> ran(nv, 0);
    for (cudaEvent_t& e : ev) VIT_CUDA_CHECK(cudaEventCreate(&e));
    for (size_t i = 0; i < nv; ++i) {
      bool ok = run(p.variants[i], p.variant_workspace[i]) == CUBLAS_STATUS_SUCCESS;
      VIT_CUDA_CHECK(cudaEventRecord(ev[2 * i], stream));
      for (int r = 0; r < kScreened && ok; ++r) ok = run(p.variants[i], p.variant_workspace[i]) == CUBLAS_STATUS_SUCCESS;
      VIT_CUDA_CHECK(cudaEventRecord(ev[2 * i + 1], stream));
      if (!ok) (void)cudaGetLastError();  // a variant the library refuses at launch is left out
      ran[i] = ok ? 1 : 0;
    }
    VIT_CUDA_CHECK(cudaStreamSynchronize(stream));
    std::vector<std::pair<float, size_t>> times;
    for (size_t i = 0; i < nv; ++i) {
      float ms = 0.0f;
      VIT_CUDA_CHECK(cudaEventElapsedTime(&ms, ev[2 * i], ev[2 * i + 1]));
      if (ran[i]) times.emplace_back(ms, i);
    }
    for (cudaEvent_t e : ev) cudaEventDestroy(e);
    std::sort(times.begin(), times.end());
    for (size_t j = 0; j < times.size() && j < kKeep; ++j) {
      all.push_back(p.variants[times[j].second]);
      all_ws.push_back(p.variant_workspace[times[j].second]);
    }
    h.gemm_variants_screened += static_cast<int64_t>(nv);
  }
  uint64_t reference = 0;
  float best_ms = 0.0f, first_ms = 0.0f;
  int best = 0, identical = 0, other_bits = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    bool ok = true;
    for (int r = 0; r < kWarm && ok; ++r) ok = launch(i) == CUBLAS_STATUS_SUCCESS;
    if (!ok) {  // a candidate the library then refuses is skipped, never used
      (void)cudaGetLastError();
      if (i == 0) break;  // no reference: keep the first answer, whose own launch reports the error
      continue;
    }
    VIT_CUDA_CHECK(cudaEventRecord(t0, stream));
    for (int r = 0; r < kTimed; ++r) VIT_CUBLAS_CHECK(launch(i));
    VIT_CUDA_CHECK(cudaEventRecord(t1, stream));
    const uint64_t hash = hash_output(h, stream, c.D, out_bytes);  // synchronises
    float ms = 0.0f;
    VIT_CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
    if (i == 0) {
      reference = hash;
      first_ms = best_ms = ms;
      identical = 1;
      continue;
    }
    if (hash != reference) {
      ++other_bits;
      continue;
    }
    ++identical;
    if (p.from_cache) {  // the cached choice, with the first's bits: kept (timed when it was cached)
      best = static_cast<int>(i);
      best_ms = ms;
      break;
    }
    if (ms < best_ms) {
      best_ms = ms;
      best = static_cast<int>(i);
    }
  }
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  if (std::getenv("VIT_KERNELS_VERBOSE")) {
    auto id_tile = [](const cublasLtMatmulAlgo_t& a) {
      int32_t id = 0, tile = 0;
      size_t w = 0;
      cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &w);
      cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &w);
      return std::to_string(id) + "/" + std::to_string(tile);
    };
    std::fprintf(stderr,
                 "vit: cuBLASLt tuning %lldx%lldx%lld: %zu single-pass candidates (%zu listed), %d with the first's "
                 "bits; first (algo/tile %s) %.4f ms, kept #%d (%s) %.4f ms\n",
                 (long long)c.m, (long long)c.n, (long long)c.k, all.size(), listed, identical, id_tile(all[0]).c_str(),
                 first_ms / kTimed, best, id_tile(all[static_cast<size_t>(best)]).c_str(), best_ms / kTimed);
  }
  p.algo = all[static_cast<size_t>(best)];
  p.workspace = all_ws[static_cast<size_t>(best)];
  p.candidates.clear();
  p.candidate_workspace.clear();
  p.variants.clear();
  p.variant_workspace.clear();
  p.tuned = true;
  if (p.from_cache) {  // the cached choice checked: kept, or left out for the first answer
    if (best != 0) {
      ++h.gemm_cache_hits;
    } else {
      ++h.gemm_cache_rejected;
    }
    return;
  }
  ++h.gemm_tuned;
  if (best != 0) ++h.gemm_tuned_other;
  if (static_cast<size_t>(best) >= listed) ++h.gemm_tuned_variant;
  h.gemm_candidates_other_bits += other_bits;
  if (h.gemm_cache && !p.cache_key.empty()) {
    GemmTuningEntry e;
    e.gpu = h.gemm_cache_gpu;
    e.library = h.gemm_cache_library;
    e.key = p.cache_key;
    e.wide = h.gemm_autotune_wide;
    std::memcpy(e.algo.data(), &p.algo, sizeof(p.algo));
    e.workspace = p.workspace;
    h.gemm_cache->put(e);
  }
}

// Where cuBLASLt has no algorithm for the call, cublasGemmEx does it.
void lt_matmul(GpuHandles& h, cudaStream_t stream, const LtCall& c) {
  if (!h.matmul_plans) h.matmul_plans = new MatmulPlanCache();
  const bool fp32 = c.ab == DType::F32;
  const cublasComputeType_t compute = (fp32 && h.tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  LtKey key;
  std::memset(&key, 0, sizeof(key));
  key.m = c.m; key.n = c.n; key.k = c.k;
  key.lda = c.lda; key.ldb = c.ldb; key.ldc = c.ldc;
  key.transa = c.transa; key.transb = c.transb;
  key.ab_type = static_cast<int32_t>(c.ab); key.cd_type = static_cast<int32_t>(c.cd);
  key.compute = compute; key.epilogue = c.epilogue;
  key.align_a = pointer_alignment(c.A); key.align_b = pointer_alignment(c.B);
  key.align_c = std::min(pointer_alignment(c.D), pointer_alignment(c.c_in()));
  key.align_bias = c.bias ? pointer_alignment(c.bias) : 0;
  key.accumulate = c.beta != 0.0f;
  key.separate_c = c.C && c.C != c.D;

  LtPlan* plan;
  {
    std::lock_guard<std::mutex> lock(h.matmul_plans->mu);
    auto it = h.matmul_plans->plans.find(key);
    if (it == h.matmul_plans->plans.end()) {
      const auto t0 = std::chrono::steady_clock::now();
      LtPlan p;
      const cudaDataType_t ab = cuda_type(c.ab), cd = cuda_type(c.cd);
      VIT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F));
      const cublasOperation_t ta = c.transa ? CUBLAS_OP_T : CUBLAS_OP_N;
      const cublasOperation_t tb = c.transb ? CUBLAS_OP_T : CUBLAS_OP_N;
      VIT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
      VIT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
      const cublasLtEpilogue_t epi = c.epilogue;
      VIT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
      if (c.bias) {
        VIT_CUBLAS_CHECK(
            cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &c.bias, sizeof(c.bias)));
      }
      // Stored (column-major) shapes: op(A) is (m, k), op(B) is (k, n).
      VIT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, ab, c.transa ? c.k : c.m, c.transa ? c.m : c.k, c.lda));
      VIT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, ab, c.transb ? c.n : c.k, c.transb ? c.k : c.n, c.ldb));
      VIT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, cd, c.m, c.n, c.ldc));

      cublasLtMatmulPreference_t pref;
      VIT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      const uint64_t ws = GpuHandles::kGemmWorkspaceBytes;
      VIT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                            sizeof(ws)));
      const uint32_t al[4] = {static_cast<uint32_t>(key.align_a), static_cast<uint32_t>(key.align_b),
                              static_cast<uint32_t>(key.align_c), static_cast<uint32_t>(key.align_c)};
      VIT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                            &al[0], sizeof(uint32_t)));
      VIT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                            &al[1], sizeof(uint32_t)));
      VIT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                            &al[2], sizeof(uint32_t)));
      VIT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                            &al[3], sizeof(uint32_t)));
      // Candidates to tune among: only for GEMMs that overwrite their output
      // and are not small (nothing worth a tuning pass to gain, and too few
      // outputs for the hash; see single_pass).
      constexpr int kCandidates = 8;
      constexpr double kTuneFlops = 1e9;
      const bool tunable = h.gemm_autotune && (c.beta == 0.0f || key.separate_c) &&
                           2.0 * static_cast<double>(c.m) * static_cast<double>(c.n) * static_cast<double>(c.k) >=
                               kTuneFlops;
      const int want = tunable ? kCandidates : 1;
      cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
      int found = 0;
      const cublasStatus_t st =
          cublasLtMatmulAlgoGetHeuristic(h.lt, p.desc, p.a, p.b, p.c, p.c, pref, want, results, &found);
      cublasLtMatmulPreferenceDestroy(pref);
      if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
        p.algo = results[0].algo;
        p.workspace = results[0].workspaceSize;
        p.has_algo = true;
        // The tuning cache's choice for this plan, when it holds one of this
        // GPU model and cuBLASLt found by a tuning of this run's kind.
        const GemmTuningEntry* cached = nullptr;
        if (tunable && h.gemm_cache && single_pass(results[0].algo)) {
          p.cache_key = cache_key(key);
          cached = h.gemm_cache->find(h.gemm_cache_gpu, h.gemm_cache_library, p.cache_key, h.gemm_autotune_wide);
        }
        if (cached) {
          take_cached(h, p, *cached);
        } else {
          if (single_pass(results[0].algo)) {
            for (int i = 1; i < found; ++i) {
              if (results[i].state == CUBLAS_STATUS_SUCCESS && single_pass(results[i].algo)) {
                p.candidates.push_back(results[i].algo);
                p.candidate_workspace.push_back(results[i].workspaceSize);
              }
            }
          }
          if (tunable && h.gemm_autotune_wide && single_pass(results[0].algo)) {
            size_t ws_cap = p.workspace;
            for (size_t w : p.candidate_workspace) ws_cap = std::max(ws_cap, w);
            add_variants(h, p, found, results, ws_cap);
          }
          p.tuned = p.candidates.empty() && p.variants.empty();
        }
      } else if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED &&
                 st != CUBLAS_STATUS_INVALID_VALUE) {
        VIT_CUBLAS_CHECK(st);
      }
      if (std::getenv("VIT_KERNELS_VERBOSE")) {
        std::fprintf(stderr, "vit: cuBLASLt plan %lldx%lldx%lld %s->%s epilogue %d: %s, workspace %zu bytes\n",
                     (long long)c.m, (long long)c.n, (long long)c.k, dtype_name(c.ab), dtype_name(c.cd),
                     int(c.epilogue), p.has_algo ? "algorithm found" : "no algorithm (fallback)", p.workspace);
      }
      it = h.matmul_plans->plans.emplace(key, p).first;
      h.gemm_tuning_seconds += seconds_since(t0);
    }
    plan = &it->second;
  }
  if (!plan->has_algo) {
    gemm_ex_fallback(h, c, compute);
    return;
  }
  if (c.bias) {
    VIT_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &c.bias, sizeof(c.bias)));
  }
  if (!plan->tuned) {
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    VIT_CUDA_CHECK(cudaStreamIsCapturing(stream, &capturing));
    if (capturing == cudaStreamCaptureStatusNone) {
      const auto t0 = std::chrono::steady_clock::now();
      tune_plan(h, stream, c, *plan);
      h.gemm_tuning_seconds += seconds_since(t0);
    }
  }
  const float alpha = 1.0f;
  // The algorithm gets the workspace it asked for and no more, so its launch
  // is the same whatever the arena's size. The arena grows on a plan's first
  // call, which is never in a graph capture (the step runs eagerly first);
  // growing during one fails the capture with an error.
  void* ws = plan->workspace > 0 ? h.gemm_workspace.get(plan->workspace, stream) : nullptr;
  VIT_CUBLAS_CHECK(cublasLtMatmul(h.lt, plan->desc, &alpha, c.A, plan->a, c.B, plan->b, &c.beta, c.c_in(), plan->c,
                                  c.D, plan->c, &plan->algo, ws, plan->workspace, stream));
}

// dweight (N, K) (+)= dout^T inp in fp32, and dbias (N) (+)= the column sums
// of dout (column_sum.cuh), summed first: dout is then likely still in L2
// from the op that wrote it, and the GEMMs read it after.
void weight_grad(GpuHandles& h, cudaStream_t stream, const Tensor& dweight, const Tensor& dbias, const Tensor& dout,
                 const Tensor& inp, int64_t M, int64_t N, int64_t K, bool accumulate) {
  const char* op = "matmul_backward";
  if (dbias.defined()) {
    check_gpu(dbias, op, "dbias");
    check_dtype(dbias, DType::F32, op, "dbias");
    check_numel(dbias, N, op, "dbias");
    column_sum(h, stream, dbias.f32(), dout.data, dout.dtype, M, N, accumulate);
  }
  LtCall c;
  c.m = K; c.n = N; c.k = M;
  c.lda = K; c.ldb = N; c.ldc = K;
  c.transa = false; c.transb = true;
  c.ab = dout.dtype; c.cd = DType::F32;
  c.A = inp.data; c.B = dout.data; c.D = dweight.data;
  c.beta = accumulate ? 1.0f : 0.0f;
  lt_matmul(h, stream, c);
}

}  // namespace

namespace cuda {

void matmul_forward(const Context& ctx, Tensor out, Tensor pre_gelu, const Tensor& inp, const Tensor& weight,
                    const Tensor& bias, const Tensor& residual) {
  const char* op = "matmul_forward";
  GpuHandles& h = gpu_of(ctx, op);
  cudaStream_t stream = stream_of(ctx);
  check_gpu(out, op, "out");
  check_gpu(inp, op, "inp");
  check_gpu(weight, op, "weight");
  VIT_CHECK(weight.ndim == 2, op, ": weight must be (N, K), got ", weight.shape_str());
  const int64_t N = weight.dim(0), K = weight.dim(1);
  VIT_CHECK(inp.dim(-1) == K, op, ": inp ", inp.shape_str(), " does not end in K = ", K);
  const int64_t M = inp.numel() / K;
  const DType dt = inp.dtype;
  check_dtype(weight, dt, op, "weight");
  check_dtype(out, dt, op, "out");
  check_numel(out, M * N, op, "out");
  if (bias.defined()) {
    check_gpu(bias, op, "bias");
    check_dtype(bias, dt, op, "bias");
    check_numel(bias, N, op, "bias");
  }
  Tensor target = out;
  if (pre_gelu.defined()) {
    check_gpu(pre_gelu, op, "pre_gelu");
    check_dtype(pre_gelu, dt, op, "pre_gelu");
    check_numel(pre_gelu, M * N, op, "pre_gelu");
    target = pre_gelu;
  }
  if (residual.defined()) {
    check_gpu(residual, op, "residual");
    check_dtype(residual, dt, op, "residual");
    check_numel(residual, M * N, op, "residual");
    VIT_CHECK(!pre_gelu.defined(), op, ": residual and pre_gelu (the GELU epilogue) do not go together");
    VIT_CHECK(residual.data != out.data, op, ": residual and out must be different buffers");
  }
  LtCall c;
  c.m = N; c.n = M; c.k = K;
  c.lda = K; c.ldb = K; c.ldc = N;
  c.transa = true; c.transb = false;
  c.ab = dt; c.cd = dt;
  c.A = weight.data; c.B = inp.data; c.D = target.data;
  if (bias.defined()) {
    c.epilogue = CUBLASLT_EPILOGUE_BIAS;
    c.bias = bias.data;
  }
  if (residual.defined()) {
    c.C = residual.data;
    c.beta = 1.0f;
  }
  lt_matmul(h, stream, c);
  if (pre_gelu.defined()) cuda::gelu_forward(ctx, out, pre_gelu);
}

void matmul_backward(const Context& ctx, Tensor dinp, Tensor dweight, Tensor dbias, const Tensor& dout,
                     const Tensor& inp, const Tensor& weight, bool accumulate) {
  const char* op = "matmul_backward";
  GpuHandles& h = gpu_of(ctx, op);
  cudaStream_t stream = stream_of(ctx);
  check_gpu(dout, op, "dout");
  check_gpu(weight, op, "weight");
  VIT_CHECK(weight.ndim == 2, op, ": weight must be (N, K), got ", weight.shape_str());
  const int64_t N = weight.dim(0), K = weight.dim(1);
  const int64_t M = dout.numel() / N;
  const DType dt = weight.dtype;
  check_dtype(dout, dt, op, "dout");
  check_numel(dout, M * N, op, "dout");
  const bool wgrad = dweight.defined();
  VIT_CHECK(wgrad || !dbias.defined(), op, ": dbias comes with dweight (an input-gradient-only call has neither)");
  VIT_CHECK(wgrad || dinp.defined(), op, ": nothing to compute (dinp and dweight are both undefined)");
  if (wgrad) {
    check_gpu(inp, op, "inp");
    check_gpu(dweight, op, "dweight");
    check_dtype(inp, dt, op, "inp");
    check_numel(inp, M * K, op, "inp");
    check_dtype(dweight, DType::F32, op, "dweight");
    check_numel(dweight, N * K, op, "dweight");
  }

  if (dinp.defined()) {
    check_gpu(dinp, op, "dinp");
    check_dtype(dinp, dt, op, "dinp");
    check_numel(dinp, M * K, op, "dinp");
  }
  // The weight gradient first, the input gradient last: the next op of the
  // backward reads dinp, and it is then still in L2 (+0.8% images/s at batch
  // 32 on an H200, the same bits); and dinp may be inp itself (matmul.h).
  // Running the two GEMMs at once on two streams was slower: Hopper's GEMM
  // kernels each hold whole SMs.
  if (wgrad) weight_grad(h, stream, dweight, dbias, dout, inp, M, N, K, accumulate);
  if (dinp.defined()) {
    LtCall c;
    c.m = K; c.n = M; c.k = N;
    c.lda = K; c.ldb = N; c.ldc = K;
    c.transa = false; c.transb = false;
    c.ab = dt; c.cd = dt;
    c.A = weight.data; c.B = dout.data; c.D = dinp.data;
    lt_matmul(h, stream, c);
  }
}

}  // namespace cuda
}  // namespace kernels
}  // namespace vit
