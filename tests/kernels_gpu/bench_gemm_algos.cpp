// How much would choosing cuBLASLt algorithms by timing gain over taking the
// heuristic's first answer (what src/kernels/matmul.cu does)? For each GEMM
// of a ViT-B/16 training step (per linear layer: the forward with its bias
// epilogue, the input gradient, the fp32 weight gradient accumulated with
// beta = 1 and the bias-gradient epilogue; the same descriptors matmul.cu
// builds), ask the heuristic for up to 32 algorithms, time each, and print
// the first one's time, the best one's, and their configurations; the last
// line weighs the layers into one step. Each GEMM also runs the first
// algorithm with split-K forced (2-8 slices, fp32 workspace reduction), and
// each weight gradient is timed once more without the bias-gradient epilogue.
// Each forward is also timed without its bias epilogue ("fwd nobias", not
// counted in the step's sums). Not a ctest test; run by hand on
// the GPU:
//
//   bench_gemm_algos [--batch 32] [--reps 20] [--search 1] [--sustain MS] [--only fc1]
//
// --search 1: beyond the heuristic's list, every configuration cuBLASLt
// accepts for the forward, input-gradient and weight-gradient GEMMs (each
// algorithm id of these types, each of its tiles and stage counts, cluster
// shapes, CTA swizzling on and off, custom options; single pass, no split-K;
// cublasLtMatmulAlgoCheck filters), screened with a short timing, the
// fastest re-timed as above, and each compared bit for bit with the
// heuristic's first answer (beta = 0, the same inputs): is a faster kernel
// with the same bits to be had that the heuristic does not list?
//
// --sustain MS (the forward and input-gradient GEMMs, which matmul.cu tunes):
// does the ranking of candidates change when the GPU runs at its power
// limit, as it does through a batch-256 step (a lower SM clock; then time
// per call follows energy per call)? The heuristic's answers with the
// first's bits (and, with --search 1, the 8 fastest searched configurations
// with them) each run back to back for MS ms, round-robin in 3 rounds after
// a second of heating, with the power meter of src/train/gpu_power.h around
// each run (mean power, median SM clock, J per call). Printed per GEMM: the
// burst-fastest (what tuning keeps today) and the sustained-fastest, both at
// the sustained rate; the last line weighs the step's 12 blocks.
// --only PREFIX: only the GEMMs whose name starts with it ("fc1", "qkv dinp");
// the per-step lines then sum those alone.
//
// Timing: 2 warm-up calls, then `reps` back-to-back calls timed with CUDA
// events, three times; the median trial / reps. Inputs are random bf16.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "train/gpu_power.h"

namespace {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string(what) + ": cuBLAS status " + std::to_string(s));
}

struct DevBuf {
  void* p = nullptr;
  explicit DevBuf(size_t bytes, bool random_bf16 = false) {
    check_cuda(cudaMalloc(&p, bytes), "cudaMalloc");
    if (!random_bf16) {
      check_cuda(cudaMemset(p, 0, bytes), "cudaMemset");
      return;
    }
    std::vector<__nv_bfloat16> h(bytes / 2);
    uint64_t st = 0x9e3779b97f4a7c15ull ^ bytes;
    for (auto& v : h) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      v = __float2bfloat16((static_cast<float>((st >> 40) & 0xffffff) / 16777216.0f - 0.5f) * 0.2f);
    }
    check_cuda(cudaMemcpy(p, h.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

std::string algo_config(const cublasLtMatmulAlgo_t& a) {
  int tile = 0, splitk = 0, stages = 0, swizzle = 0, reduction = 0;
  size_t w = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof(tile), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof(splitk), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof(stages), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, &swizzle, sizeof(swizzle), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &reduction, sizeof(reduction),
                                       &w);
  char buf[96];
  std::snprintf(buf, sizeof buf, "tile %d splitK %d red %d stages %d swz %d", tile, splitk, reduction, stages,
                swizzle);
  return buf;
}

struct Gemm {
  std::string name;
  int64_t m, n, k, lda, ldb, ldc;
  bool transa, transb;
  bool out_f32;
  cublasLtEpilogue_t epilogue;
  float beta;
};


struct SearchResult {
  int checked = 0, ran = 0;
  double same_ms = 1e30, any_ms = 1e30;
  std::string same_cfg = "(none)", any_cfg = "(none)";
  std::vector<cublasLtMatmulAlgo_t> same_top;  // the re-timed configurations with the first's bits
};

std::string search_config(const cublasLtMatmulAlgo_t& a) {
  int id = 0, cluster = 0, custom = 0;
  size_t w = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof(id), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, &cluster, sizeof(cluster), &w);
  cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, &custom, sizeof(custom), &w);
  return "(algo " + std::to_string(id) + " " + algo_config(a) + " cluster " + std::to_string(cluster) + " custom " +
         std::to_string(custom) + ")";
}

// Every single-pass configuration cublasLtMatmulAlgoCheck accepts for the
// call (beta = 0), screened by 1 + 5 calls, the 8 fastest re-timed by
// `median` and compared bit for bit with `first`'s output.
template <typename Median>
SearchResult search_configs(cublasLtHandle_t lt, cudaStream_t stream, cublasLtMatmulDesc_t desc,
                            cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc,
                            const void* A, const void* B, void* D, size_t d_bytes, void* ws, size_t ws_bytes,
                            const cublasLtMatmulAlgo_t& first, const std::vector<cublasLtMatmulAlgo_t>& heuristic,
                            const Median& median) {
  SearchResult r;
  const float alpha = 1.0f, beta = 0.0f;
  auto launch = [&](const cublasLtMatmulAlgo_t& a) {
    return cublasLtMatmul(lt, desc, &alpha, A, la, B, lb, &beta, D, lc, D, lc, &a, ws, ws_bytes, stream);
  };
  std::vector<unsigned char> ref(d_bytes), out(d_bytes);
  check_lt(launch(first), "search: first");
  check_cuda(cudaMemcpyAsync(ref.data(), D, d_bytes, cudaMemcpyDeviceToHost, stream), "copy");
  check_cuda(cudaStreamSynchronize(stream), "sync");
  cublasDataType_t types[4];
  size_t w = 0;
  int32_t a_type = 0, c_type = 0;
  check_lt(cublasLtMatrixLayoutGetAttribute(la, CUBLASLT_MATRIX_LAYOUT_TYPE, &a_type, sizeof(a_type), &w), "type");
  check_lt(cublasLtMatrixLayoutGetAttribute(lc, CUBLASLT_MATRIX_LAYOUT_TYPE, &c_type, sizeof(c_type), &w), "type");
  types[0] = types[1] = static_cast<cublasDataType_t>(a_type);
  types[2] = types[3] = static_cast<cublasDataType_t>(c_type);
  // The bases: the heuristic's own answers (they carry the algorithm id,
  // inner shape and options the Hopper kernels need; initialising an id from
  // cublasLtMatmulAlgoGetIds gave only configurations of an older algorithm
  // on the H200), then every id the library lists for these types.
  std::vector<cublasLtMatmulAlgo_t> bases(heuristic.begin(), heuristic.end());
  int ids[256];
  int n_ids = 0;
  check_lt(cublasLtMatmulAlgoGetIds(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, types[0], types[1], types[2], types[3], 256,
                                    ids, &n_ids),
           "algo ids");
  for (int ii = 0; ii < n_ids; ++ii) {
    cublasLtMatmulAlgo_t a;
    if (cublasLtMatmulAlgoInit(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, types[0], types[1], types[2], types[3], ids[ii],
                               &a) == CUBLAS_STATUS_SUCCESS) {
      bases.push_back(a);
    }
  }
  cudaEvent_t e0, e1;
  check_cuda(cudaEventCreate(&e0), "event");
  check_cuda(cudaEventCreate(&e1), "event");
  std::vector<std::pair<float, cublasLtMatmulAlgo_t>> screened;
  const int clusters[] = {-1, CUBLASLT_CLUSTER_SHAPE_AUTO, CUBLASLT_CLUSTER_SHAPE_1x1x1, CUBLASLT_CLUSTER_SHAPE_2x1x1,
                          CUBLASLT_CLUSTER_SHAPE_1x2x1, CUBLASLT_CLUSTER_SHAPE_2x2x1, CUBLASLT_CLUSTER_SHAPE_4x1x1,
                          CUBLASLT_CLUSTER_SHAPE_1x4x1};
  for (size_t bi = 0; bi < bases.size(); ++bi) {
    const cublasLtMatmulAlgo_t base = bases[bi];
    const bool from_heuristic = bi < heuristic.size();
    auto cap_list = [&](cublasLtMatmulAlgoCapAttributes_t attr) {
      size_t bytes = 0;
      std::vector<uint32_t> v;
      if (cublasLtMatmulAlgoCapGetAttribute(&base, attr, nullptr, 0, &bytes) != CUBLAS_STATUS_SUCCESS || bytes == 0) {
        return std::vector<uint32_t>{0};
      }
      v.resize(bytes / sizeof(uint32_t));
      if (cublasLtMatmulAlgoCapGetAttribute(&base, attr, v.data(), bytes, &bytes) != CUBLAS_STATUS_SUCCESS) return std::vector<uint32_t>{0};
      return v;
    };
    // kKeep: leave the base's own setting (the heuristic's answers keep
    // their stages and custom option and add every tile, cluster shape and
    // swizzle; ids from GetIds get every combination).
    constexpr uint32_t kKeep = 0xffffffffu;
    std::vector<uint32_t> tiles = cap_list(CUBLASLT_ALGO_CAP_TILE_IDS), stages = cap_list(CUBLASLT_ALGO_CAP_STAGES_IDS);
    int32_t swz_ok = 0, custom_max = 0;
    cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT, &swz_ok, sizeof(swz_ok), &w);
    cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX, &custom_max, sizeof(custom_max), &w);
    std::vector<uint32_t> swzs{0}, customs;
    if (swz_ok) swzs.push_back(1);
    for (int32_t cu = 0; cu <= std::min(custom_max, 3); ++cu) customs.push_back(static_cast<uint32_t>(cu));
    if (from_heuristic) {
      tiles.insert(tiles.begin(), kKeep);
      stages = {kKeep};
      swzs.insert(swzs.begin(), kKeep);
      customs = {kKeep};
    }
    for (uint32_t tile : tiles) {
      for (uint32_t st : stages) {
        for (int cl : clusters) {
          for (uint32_t swz : swzs) {
            for (uint32_t cu : customs) {
              cublasLtMatmulAlgo_t a = base;
              const int32_t one = 1;
              const uint32_t cl32 = static_cast<uint32_t>(cl);
              auto set = [&](cublasLtMatmulAlgoConfigAttributes_t attr, const uint32_t& v) {
                return v == kKeep || cublasLtMatmulAlgoConfigSetAttribute(&a, attr, &v, sizeof(v)) == CUBLAS_STATUS_SUCCESS;
              };
              if (!set(CUBLASLT_ALGO_CONFIG_TILE_ID, tile) || !set(CUBLASLT_ALGO_CONFIG_STAGES_ID, st) ||
                  cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &one, sizeof(one)) ||
                  !set(CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, swz) || !set(CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, cu)) {
                continue;
              }
              // -1: the cluster shape left as the base has it.
              if (cl >= 0 && !set(CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, cl32)) continue;
              // An id from GetIds starts at AUTO: -1 (unset) would time it twice.
              if (!from_heuristic && cl == CUBLASLT_CLUSTER_SHAPE_AUTO) continue;
              if (from_heuristic) {  // single pass only: no reduction scheme either
                const uint32_t none = CUBLASLT_REDUCTION_SCHEME_NONE;
                if (!set(CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, none)) continue;
              }
              ++r.checked;
              cublasLtMatmulHeuristicResult_t chk{};
              if (cublasLtMatmulAlgoCheck(lt, desc, la, lb, lc, lc, &a, &chk) != CUBLAS_STATUS_SUCCESS) continue;
              if (chk.workspaceSize > ws_bytes) continue;
              if (launch(a) != CUBLAS_STATUS_SUCCESS) {
                (void)cudaGetLastError();
                continue;
              }
              check_cuda(cudaEventRecord(e0, stream), "event");
              bool ok = true;
              for (int rep = 0; rep < 5 && ok; ++rep) ok = launch(a) == CUBLAS_STATUS_SUCCESS;
              check_cuda(cudaEventRecord(e1, stream), "event");
              check_cuda(cudaEventSynchronize(e1), "sync");
              if (!ok) continue;
              float ms = 0;
              check_cuda(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
              ++r.ran;
              screened.emplace_back(ms / 5, a);
            }
          }
        }
      }
    }
  }
  std::sort(screened.begin(), screened.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  for (size_t i = 0; i < screened.size() && i < 8; ++i) {
    const cublasLtMatmulAlgo_t& a = screened[i].second;
    check_lt(launch(a), "search: rerun");
    check_cuda(cudaMemcpyAsync(out.data(), D, d_bytes, cudaMemcpyDeviceToHost, stream), "copy");
    check_cuda(cudaStreamSynchronize(stream), "sync");
    const bool same = std::memcmp(out.data(), ref.data(), d_bytes) == 0;
    const double ms = median([&] { return launch(a); });
    if (ms < r.any_ms) {
      r.any_ms = ms;
      r.any_cfg = search_config(a) + (same ? " same bits" : " other bits");
    }
    if (same) r.same_top.push_back(a);
    if (same && ms < r.same_ms) {
      r.same_ms = ms;
      r.same_cfg = search_config(a);
    }
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return r;
}

// --sustain: each candidate back to back for `sustain_ms`, round-robin in 3
// rounds after ~1 s of the first candidate (so the GPU starts at its
// sustained clock), the power meter around each run. Returns the sustained
// ms per call of the first candidate, of the burst-fastest and of the
// sustained-fastest.
struct SustainResult {
  double first_ms = 0, burst_best_ms = 0, best_ms = 0;
};

template <typename Launch>
SustainResult sustain_compare(cudaStream_t stream, const std::string& bus_id, const std::string& name,
                              const std::vector<cublasLtMatmulAlgo_t>& cands, const std::vector<std::string>& labels,
                              const std::vector<double>& burst_ms, double sustain_ms, const Launch& launch) {
  const size_t n = cands.size();
  cudaEvent_t e0, e1;
  check_cuda(cudaEventCreate(&e0), "event");
  check_cuda(cudaEventCreate(&e1), "event");
  const int heat = std::max(1, static_cast<int>(1000.0 / burst_ms[0]));
  for (int r = 0; r < heat; ++r) check_lt(launch(cands[0]), "sustain: heat");
  check_cuda(cudaStreamSynchronize(stream), "sync");
  std::vector<std::vector<double>> ms(n), mj(n), watts(n), mhz(n), capped(n);
  vit::train::GpuPowerMeter meter(bus_id, 20);
  std::string not_measured;  // why the meter read nothing (no NVML, ...): the times stand alone
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < n; ++i) {
      const int reps = std::max(10, static_cast<int>(sustain_ms / burst_ms[i]));
      meter.start();
      check_cuda(cudaEventRecord(e0, stream), "event");
      for (int r = 0; r < reps; ++r) check_lt(launch(cands[i]), "sustain: run");
      check_cuda(cudaEventRecord(e1, stream), "event");
      check_cuda(cudaEventSynchronize(e1), "sync");
      const vit::train::GpuPowerSummary s = meter.stop();
      float el = 0;
      check_cuda(cudaEventElapsedTime(&el, e0, e1), "elapsed");
      ms[i].push_back(el / reps);
      if (!s.measured) not_measured = s.why_not;
      if (s.measured) {
        mj[i].push_back(1e3 * s.energy_j / reps);
        watts[i].push_back(s.power_mean_w);
        mhz[i].push_back(s.sm_clock_median_mhz);
        capped[i].push_back(s.power_capped_share);
      }
    }
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  auto med = [](std::vector<double> v) {
    if (v.empty()) return -1.0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  size_t burst_best = 0, best = 0;
  std::vector<double> sus(n);
  for (size_t i = 0; i < n; ++i) {
    sus[i] = med(ms[i]);
    if (burst_ms[i] < burst_ms[burst_best]) burst_best = i;
  }
  for (size_t i = 0; i < n; ++i) {
    if (sus[i] < sus[best]) best = i;
  }
  if (!not_measured.empty()) std::printf("%-14s   power not measured: %s\n", name.c_str(), not_measured.c_str());
  for (size_t i = 0; i < n; ++i) {
    char power[96] = "";
    if (!watts[i].empty()) {
      std::snprintf(power, sizeof power, ", %.0f W, %.0f MHz, %.0f%% capped, %.1f mJ/call", med(watts[i]),
                    med(mhz[i]), 100.0 * med(capped[i]), med(mj[i]));
    }
    std::printf("%-14s   sustained #%-2zu %c%c burst %.4f ms, sustained %.4f ms (%+.1f%%)%s  %s\n", name.c_str(), i,
                i == burst_best ? 'B' : ' ', i == best ? 'S' : ' ', burst_ms[i], sus[i],
                100.0 * (sus[i] - burst_ms[i]) / burst_ms[i], power, labels[i].c_str());
  }
  SustainResult r{sus[0], sus[burst_best], sus[best]};
  std::printf("%-14s sustained: first %.4f ms, burst-fastest #%zu %.4f ms, sustained-fastest #%zu %.4f ms (%.1f%% "
              "less than the burst-fastest)\n",
              name.c_str(), r.first_ms, burst_best, r.burst_best_ms, best, r.best_ms,
              100.0 * (r.burst_best_ms - r.best_ms) / r.burst_best_ms);
  std::fflush(stdout);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t B = 32;
  int reps = 20;
  bool search = false;
  double sustain_ms = 0;
  std::string only;  // --only fc1: the GEMMs whose name starts with it
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--batch") B = std::atoll(argv[i + 1]);
    else if (k == "--reps") reps = std::atoi(argv[i + 1]);
    else if (k == "--search") search = std::atoi(argv[i + 1]) != 0;
    else if (k == "--sustain") sustain_ms = std::atof(argv[i + 1]);
    else if (k == "--only") only = argv[i + 1];
  }
  try {
    cudaDeviceProp prop{};
    check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    cublasLtHandle_t lt;
    check_lt(cublasLtCreate(&lt), "cublasLtCreate");
    cudaStream_t stream;
    check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
    cudaEvent_t ea, eb;
    check_cuda(cudaEventCreate(&ea), "cudaEventCreate");
    check_cuda(cudaEventCreate(&eb), "cudaEventCreate");
    char bus_id[32] = {0};
    check_cuda(cudaDeviceGetPCIBusId(bus_id, sizeof bus_id, 0), "cudaDeviceGetPCIBusId");
    const size_t ws_bytes = size_t(32) << 20;  // GpuHandles::kGemmWorkspaceBytes
    DevBuf ws(ws_bytes);
    const int64_t M = B * 197;
    // `reps` back-to-back calls timed with events, three times: the median
    // trial per call, in ms.
    auto median_ms = [&](const auto& run) {
      std::vector<float> trials;
      for (int t = 0; t < 3; ++t) {
        check_cuda(cudaEventRecord(ea, stream), "event");
        for (int r = 0; r < reps; ++r) check_lt(run(), "cublasLtMatmul");
        check_cuda(cudaEventRecord(eb, stream), "event");
        check_cuda(cudaEventSynchronize(eb), "sync");
        float ms = 0;
        check_cuda(cudaEventElapsedTime(&ms, ea, eb), "elapsed");
        trials.push_back(ms / reps);
      }
      std::sort(trials.begin(), trials.end());
      return static_cast<double>(trials[1]);
    };
    std::printf("bench_gemm_algos: %s, ViT-B/16 bf16, batch %lld (M = %lld), %d reps x 3 trials\n", prop.name,
                (long long)B, (long long)M, reps);

    // Linear layers (N out, K in, count per step) and their three GEMMs, as
    // matmul_forward / matmul_backward describe them (column-major).
    struct Lin {
      const char* name;
      int64_t N, K;
      int count;
    };
    const Lin lins[] = {{"qkv", 2304, 768, 12}, {"proj", 768, 768, 12}, {"fc1", 3072, 768, 12}, {"fc2", 768, 3072, 12}};
    double total_first = 0, total_best = 0, total_split = 0, total_dw_only = 0;
    double search_list = 0, search_same = 0, search_any = 0;  // --search: fwd + dinp + dW only, per step
    double sus_first = 0, sus_burst = 0, sus_best = 0;        // --sustain: fwd + dinp, per step
    std::printf("%-14s %6s %6s %6s | %9s %9s %6s | %s -> %s\n", "gemm", "m", "n", "k", "first ms", "best ms", "gain",
                "first", "best");
    for (const Lin& l : lins) {
      const Gemm gemms[5] = {
          {std::string(l.name) + " fwd", l.N, M, l.K, l.K, l.K, l.N, true, false, false, CUBLASLT_EPILOGUE_BIAS, 0.0f},
          // The forward without the bias epilogue (the bias then added by
          // the pass that reads the output): what does the epilogue cost?
          {std::string(l.name) + " fwd nobias", l.N, M, l.K, l.K, l.K, l.N, true, false, false,
           CUBLASLT_EPILOGUE_DEFAULT, 0.0f},
          {std::string(l.name) + " dinp", l.K, M, l.N, l.K, l.N, l.K, false, false, false, CUBLASLT_EPILOGUE_DEFAULT,
           0.0f},
          {std::string(l.name) + " dW+db", l.K, l.N, M, l.K, l.N, l.K, false, true, true, CUBLASLT_EPILOGUE_BGRADB,
           1.0f},
          // The same weight gradient without the bias-gradient epilogue (the
          // bias gradient then needs a column sum of its own): is the
          // epilogue what keeps these GEMMs off the faster kernels?
          {std::string(l.name) + " dW only", l.K, l.N, M, l.K, l.N, l.K, false, true, true,
           CUBLASLT_EPILOGUE_DEFAULT, 1.0f},
      };
      for (const Gemm& g : gemms) {
        if (!only.empty() && g.name.compare(0, only.size(), only) != 0) continue;
        const bool in_step = (g.epilogue != CUBLASLT_EPILOGUE_DEFAULT || g.name.find("dW") == std::string::npos) &&
                             g.name.find("nobias") == std::string::npos;
        const int64_t a_elems = (g.transa ? g.k : g.m) * g.lda, b_elems = (g.transb ? g.k : g.n) * g.ldb;
        const size_t c_bytes = static_cast<size_t>(g.ldc * g.n) * (g.out_f32 ? 4 : 2);
        DevBuf A(static_cast<size_t>(std::max(a_elems, (g.transa ? g.m : g.k) * g.lda)) * 2, true);
        DevBuf Bm(static_cast<size_t>(std::max(b_elems, (g.transb ? g.n : g.k) * g.ldb)) * 2, true);
        DevBuf D(c_bytes);
        const int64_t bias_len = g.epilogue == CUBLASLT_EPILOGUE_BGRADB ? g.n : g.m;
        DevBuf bias(static_cast<size_t>(bias_len) * (g.epilogue == CUBLASLT_EPILOGUE_BGRADB ? 4 : 2), true);

        cublasLtMatmulDesc_t desc;
        check_lt(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
        const cublasOperation_t ta = g.transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.transb ? CUBLAS_OP_T : CUBLAS_OP_N;
        check_lt(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "transa");
        check_lt(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "transb");
        check_lt(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &g.epilogue, sizeof(g.epilogue)),
                 "epilogue");
        if (g.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {  // with no epilogue, a bias pointer makes every algorithm refuse
          check_lt(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias.p, sizeof(bias.p)),
                   "bias");
        }
        cublasLtMatrixLayout_t la, lb, lc;
        check_lt(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, g.transa ? g.k : g.m, g.transa ? g.m : g.k, g.lda), "a");
        check_lt(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, g.transb ? g.n : g.k, g.transb ? g.k : g.n, g.ldb), "b");
        check_lt(cublasLtMatrixLayoutCreate(&lc, g.out_f32 ? CUDA_R_32F : CUDA_R_16BF, g.m, g.n, g.ldc), "c");
        cublasLtMatmulPreference_t pref;
        check_lt(cublasLtMatmulPreferenceCreate(&pref), "pref");
        check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                      sizeof(ws_bytes)),
                 "pref ws");
        std::vector<cublasLtMatmulHeuristicResult_t> res(32);
        int found = 0;
        check_lt(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 32, res.data(), &found), "heuristic");
        const float alpha = 1.0f;
        double first = -1, best = 1e30;
        int best_i = -1;
        std::vector<double> list_ms(static_cast<size_t>(std::max(found, 0)), -1.0);
        for (int i = 0; i < found; ++i) {
          auto run = [&] {
            return cublasLtMatmul(lt, desc, &alpha, A.p, la, Bm.p, lb, &g.beta, D.p, lc, D.p, lc, &res[i].algo, ws.p,
                                  ws_bytes, stream);
          };
          if (run() != CUBLAS_STATUS_SUCCESS) continue;  // an algorithm that refuses this call is skipped
          run();
          const double ms = median_ms(run);
          list_ms[static_cast<size_t>(i)] = ms;
          if (i == 0) first = ms;
          if (ms < best) {
            best = ms;
            best_i = i;
          }
        }
        // The heuristic's first algorithm with split-K forced (2-8 slices, the
        // partial sums reduced in fp32 in the workspace, a fixed order):
        // wanted where the output has fewer tiles than the GPU has SMs.
        double split_best = 1e30;
        int split_s = 0;
        if (found > 0) {
          for (int sk : {2, 3, 4, 6, 8}) {
            cublasLtMatmulAlgo_t algo = res[0].algo;
            const uint32_t scheme = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
            if (cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof(sk)) !=
                    CUBLAS_STATUS_SUCCESS ||
                cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme,
                                                     sizeof(scheme)) != CUBLAS_STATUS_SUCCESS) {
              continue;  // this algorithm takes no split-K setting: nothing to time
            }
            cublasLtMatmulHeuristicResult_t chk{};
            if (cublasLtMatmulAlgoCheck(lt, desc, la, lb, lc, lc, &algo, &chk) != CUBLAS_STATUS_SUCCESS) continue;
            if (chk.workspaceSize > ws_bytes) continue;
            auto run = [&] {
              return cublasLtMatmul(lt, desc, &alpha, A.p, la, Bm.p, lb, &g.beta, D.p, lc, D.p, lc, &algo, ws.p,
                                    ws_bytes, stream);
            };
            if (run() != CUBLAS_STATUS_SUCCESS) continue;
            const double ms = median_ms(run);
            if (ms < split_best) {
              split_best = ms;
              split_s = sk;
            }
          }
        }
        check_cuda(cudaStreamSynchronize(stream), "sync");
        if (split_s > 0 && first > 0) {
          std::printf("%-14s   first algorithm with split-K %d: %.4f ms (%+.1f%% against the first as it comes)\n",
                      g.name.c_str(), split_s, split_best, 100.0 * (split_best - first) / first);
          if (in_step) total_split += std::min(split_best, best) * l.count;
        } else if (first > 0 && in_step) {
          total_split += best * l.count;
        }
        if (first < 0 || best_i < 0) {
          std::printf("%-14s %6lld %6lld %6lld | the first of %d algorithms failed\n", g.name.c_str(), (long long)g.m,
                      (long long)g.n, (long long)g.k, found);
        } else {
          const double tflop = 2.0 * g.m * g.n * g.k / 1e12;
          std::printf("%-14s %6lld %6lld %6lld | %9.4f %9.4f %5.1f%% | %s (%.0f TFLOP/s) -> #%d %s (%.0f TFLOP/s), %d tried\n",
                      g.name.c_str(), (long long)g.m, (long long)g.n, (long long)g.k, first, best,
                      100.0 * (first - best) / first, algo_config(res[0].algo).c_str(), tflop / (first * 1e-3), best_i,
                      algo_config(res[best_i].algo).c_str(), tflop / (best * 1e-3), found);
          if (in_step) {
            total_first += first * l.count;
            total_best += best * l.count;
          } else {
            total_dw_only += best * l.count;
          }
        }
        SearchResult sr;
        if (search && g.epilogue != CUBLASLT_EPILOGUE_BGRADB && first > 0 && best_i >= 0) {
          std::vector<cublasLtMatmulAlgo_t> heuristic_algos;
          for (int i = 0; i < found; ++i) heuristic_algos.push_back(res[i].algo);
          sr = search_configs(lt, stream, desc, la, lb, lc, A.p, Bm.p, D.p, c_bytes, ws.p, ws_bytes, res[0].algo,
                              heuristic_algos, median_ms);
          const double tflop = 2.0 * g.m * g.n * g.k / 1e12;
          // A side that found nothing (every screened configuration refused
          // or, for "the first's bits", none had them) says so rather than
          // print its sentinel.
          auto side = [&](double ms, const std::string& cfg) {
            if (ms >= 1e29) return std::string("none");
            char buf[160];
            std::snprintf(buf, sizeof buf, "%.4f ms (%.0f TFLOP/s, %+.1f%% against the list's best) ", ms,
                          tflop / (ms * 1e-3), 100.0 * (ms - best) / best);
            return buf + cfg;
          };
          std::printf("%-14s search: %d configurations checked, %d ran; fastest with the first's bits %s; fastest of "
                      "any bits %s\n",
                      g.name.c_str(), sr.checked, sr.ran, side(sr.same_ms, sr.same_cfg).c_str(),
                      side(sr.any_ms, sr.any_cfg).c_str());
          std::fflush(stdout);
          const bool step_gemm = (g.epilogue != CUBLASLT_EPILOGUE_DEFAULT || g.name.find("dW") == std::string::npos ||
                                  g.name.find("dW only") != std::string::npos) &&
                                 g.name.find("nobias") == std::string::npos;
          if (step_gemm) {
            search_list += best * l.count;
            search_same += std::min(best, sr.same_ms) * l.count;
            search_any += std::min(best, sr.any_ms) * l.count;
          }
        }
        // --sustain: the tuned GEMMs (beta = 0: forward and input gradient).
        if (sustain_ms > 0 && g.beta == 0.0f && first > 0) {  // fwd nobias too, outside the per-step sums
          auto launch = [&](const cublasLtMatmulAlgo_t& a) {
            return cublasLtMatmul(lt, desc, &alpha, A.p, la, Bm.p, lb, &g.beta, D.p, lc, D.p, lc, &a, ws.p, ws_bytes,
                                  stream);
          };
          auto output = [&](const cublasLtMatmulAlgo_t& a) {
            std::vector<unsigned char> out(c_bytes);
            check_lt(launch(a), "sustain: bits");
            check_cuda(cudaMemcpyAsync(out.data(), D.p, c_bytes, cudaMemcpyDeviceToHost, stream), "copy");
            check_cuda(cudaStreamSynchronize(stream), "sync");
            return out;
          };
          const std::vector<unsigned char> ref = output(res[0].algo);
          std::vector<cublasLtMatmulAlgo_t> cands;
          std::vector<std::string> labels;
          std::vector<double> burst;
          for (int i = 0; i < found; ++i) {
            if (list_ms[static_cast<size_t>(i)] < 0 || (i > 0 && output(res[i].algo) != ref)) continue;
            cands.push_back(res[i].algo);
            labels.push_back("list #" + std::to_string(i) + " " + search_config(res[i].algo));
            burst.push_back(list_ms[static_cast<size_t>(i)]);
          }
          for (const cublasLtMatmulAlgo_t& a : sr.same_top) {
            cands.push_back(a);
            labels.push_back("searched " + search_config(a));
            burst.push_back(median_ms([&] { return launch(a); }));
          }
          const SustainResult su = sustain_compare(stream, bus_id, g.name, cands, labels, burst, sustain_ms, launch);
          if (in_step) {
            sus_first += su.first_ms * l.count;
            sus_burst += su.burst_best_ms * l.count;
            sus_best += su.best_ms * l.count;
          }
        }
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatmulDescDestroy(desc);
      }
    }
    std::printf("per step (12 blocks x 4 layers x 3 GEMMs): heuristic's first %.3f ms, fastest %.3f ms (%.1f%% less)\n",
                total_first, total_best, 100.0 * (total_first - total_best) / total_first);
    std::printf("per step, the fastest of the list and the forced split-K: %.3f ms (%.1f%% less than the first)\n",
                total_split, 100.0 * (total_first - total_split) / total_first);
    std::printf("weight gradients without the bias-gradient epilogue (fastest of the list): %.3f ms per step, "
                "before any column sums for the bias gradients\n",
                total_dw_only);
    if (search) {
      std::printf("search, per step (fwd + dinp + dW without epilogue, 12 blocks): the list's fastest %.3f ms, with "
                  "searched configurations of the same bits %.3f ms (%.1f%% less), of any bits %.3f ms (%.1f%% less)\n",
                  search_list, search_same, 100.0 * (search_list - search_same) / search_list, search_any,
                  100.0 * (search_list - search_any) / search_list);
    }
    if (sustain_ms > 0) {
      std::printf("sustained, per step (fwd + dinp, 12 blocks): heuristic's first %.3f ms, burst-fastest %.3f ms, "
                  "sustained-fastest %.3f ms (%.1f%% less than the burst-fastest)\n",
                  sus_first, sus_burst, sus_best, 100.0 * (sus_burst - sus_best) / sus_burst);
    }
    cublasLtDestroy(lt);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gemm_algos: %s\n", e.what());
    return 1;
  }
}
