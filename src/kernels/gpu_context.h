// The GPU side of a Context: stream, library handles, workspaces, plan caches.
//
// GpuRuntime is what the rest of the program holds (one per rank and GPU):
//
//   vit::GpuRuntime gpu(local_rank, /*tf32=*/true);
//   vit::Context ctx = gpu.context();    // device CUDA, stream, handles
//   kernels::matmul_forward(ctx, ...);   // every op runs on ctx.stream
//   gpu.synchronize();                   // only at the edges of a step
//
// It is includable from CPU-only code: in a build without CUDA the class
// exists and its constructor throws a clear error. The struct GpuHandles
// behind Context::gpu is defined here only for CUDA builds (VIT_WITH_CUDA);
// plain C++ code never needs its members.
//
// Why a fixed workspace and arenas: a training step must not synchronise
// with the host and must be capturable as a CUDA graph later. So every
// buffer an op needs beyond its arguments (cuBLASLt/cuBLAS workspace, cuDNN
// workspace, the attention scores of the cuBLAS path, partial sums of the
// reductions) comes from arenas that grow only on first use of a shape
// (outside the timed and captured steps) and are reused afterwards.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/device.h"
#include "core/error.h"
#include "kernels/gemm_tuning_cache.h"

#ifdef VIT_WITH_CUDA
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#endif

namespace vit {

class GpuRuntime {
 public:
  // Selects the device, creates a non-blocking stream and the cuBLASLt,
  // cuBLAS and cuDNN handles bound to it. tf32: fp32 GEMMs may use the
  // tensor cores' TF32 mode (about 1e-3 relative error instead of 1e-6).
  explicit GpuRuntime(int device_index = 0, bool tf32 = false);
  ~GpuRuntime();
  GpuRuntime(const GpuRuntime&) = delete;
  GpuRuntime& operator=(const GpuRuntime&) = delete;

  Context context() const;
  void synchronize();                 // waits for everything queued on the stream
  GpuHandles* handles() const { return handles_.get(); }
  int device_index() const;
  void set_tf32(bool on);
  // cuDNN attention backward: deterministic (default; bit-identical reruns,
  // needed by the multi-rank equality tests) or the fp32-atomic dQ form,
  // which may be faster. Plans for both are cached side by side.
  void set_sdpa_deterministic(bool on);
  // Attention backward of the cuDNN path: the project's short-sequence
  // kernel (attention_short.h) where the shape fits (default), else, or when
  // off, cuDNN's (the forward: set_attention_forward_wgmma).
  void set_attention_backward_short(bool on);
  // Where the short-sequence kernel runs on a Hopper GPU: its wgmma form
  // (attention_sm90a.h; default; the same bits, ~18% faster at ViT-B/16) or,
  // when off, the mma.sync kernel (attention_short.h) on every GPU.
  void set_attention_backward_wgmma(bool on);
  // Attention forward of the cuDNN path on a Hopper GPU: the project's wgmma
  // kernel (attention_sm90a.h; default) where the shape fits, else, or when
  // off, cuDNN's fused forward.
  void set_attention_forward_wgmma(bool on);
  // cuBLASLt: on the first call of a plan of at least 1 GFLOP that
  // overwrites its output, keep the fastest of the heuristic's single-pass
  // candidates that give the first candidate's bits (matmul.cu). Off: the
  // heuristic's first answer, as before.
  void set_gemm_autotune(bool on);
  // With tuning on, also screen the first candidate's algorithm in its other
  // single-pass configurations (tiles x custom options; matmul.cu): +1%
  // images/s for ViT-B/16 on an H200, at a cost of 20-30 s at start-up
  // unless the tuning cache holds the shapes. Off here; the spec's default
  // (plugin.gemm_autotune_wide) turns it on.
  void set_gemm_autotune_wide(bool on);
  // A file of tuning results (gemm_tuning_cache.h; plugin.gemm_tuning_cache)
  // read now: plans it holds for this GPU model and cuBLASLt version skip
  // the timing (each cached choice is still checked once against the
  // heuristic's first answer's bits). Throws UserError for a file that does
  // not read. "" = none.
  void set_gemm_tuning_cache(const std::string& path);
  // Writes the plans tuned since the last save into that file (merged with
  // it); returns how many; 0 without a cache. Throws UserError when the file
  // cannot be written.
  size_t save_gemm_tuning_cache();

 private:
  std::unique_ptr<GpuHandles> handles_;
};

// The folds of partial column sums (column_sum.h) that the GPU ops on ctx's
// stream make, deferred while the scope lives and launched together by
// flush(): one launch for a model segment's biases and LayerNorms instead of
// one each. Scopes nest (the outermost owns the deferral). The destructor
// launches what is still pending (when no exception is in flight). Nothing
// to do on the CPU.
class FoldScope {
 public:
  explicit FoldScope(const Context& ctx);
  ~FoldScope() noexcept(false);
  FoldScope(const FoldScope&) = delete;
  FoldScope& operator=(const FoldScope&) = delete;
  void flush();

 private:
  GpuHandles* h_ = nullptr;  // null on the CPU, and in nested scopes
};

#ifdef VIT_WITH_CUDA

// Device memory that grows to the largest size asked for and is then reused.
// Growing synchronises the stream (the old block may still be in use): that
// happens the first time a shape is seen, never in a steady-state step.
class DeviceArena {
 public:
  void* get(size_t bytes, cudaStream_t stream);
  size_t capacity() const { return buf_.bytes(); }

 private:
  Buffer buf_;
};

// A fold of partial column sums waiting to be launched (column_sum.h,
// deferred folds): dst[c] (+)= sum over s < splits of partial[s * N + c],
// columns at or past n1 into dst2[c - n1]; `rows` rows of threads split the
// splits (8 or 32: the order of the sums of the op that made the partials).
struct PendingFold {
  float* dst = nullptr;
  float* dst2 = nullptr;
  int64_t n1 = 0;
  const float* partial = nullptr;
  int64_t N = 0;
  int splits = 0;
  int rows = 32;
  bool accumulate = false;
};

struct MatmulPlanCache;   // matmul.cu: cuBLASLt descriptors and algorithms per shape
struct SdpaPlanCache;     // attention.cu: cuDNN SDPA execution plans per shape

struct GpuHandles {
  int device = 0;
  int num_sms = 0;
  int cc_major = 0;     // compute capability, major
  int smem_optin = 0;   // shared memory a block may opt in to (bytes)
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;   // batched GEMMs of the cuBLAS attention path
  cudnnHandle_t cudnn = nullptr;
  bool tf32 = false;
  bool sdpa_deterministic = true;
  bool attention_backward_short = true;  // see GpuRuntime::set_attention_backward_short
  bool attention_backward_wgmma = true;  // see GpuRuntime::set_attention_backward_wgmma
  bool attention_forward_wgmma = true;   // see GpuRuntime::set_attention_forward_wgmma
  bool gemm_autotune = false;  // see GpuRuntime::set_gemm_autotune
  bool gemm_autotune_wide = false;  // see GpuRuntime::set_gemm_autotune_wide
  // What tuning did (matmul.cu): plans tuned among more than one candidate,
  // those that kept another candidate than the heuristic's first, and
  // candidates left out because their output had other bits.
  int64_t gemm_tuned = 0, gemm_tuned_other = 0, gemm_candidates_other_bits = 0;
  // Configurations of the heuristic's first algorithm (other tiles and custom
  // options) screened beyond its list, and plans that kept one of them.
  int64_t gemm_variants_screened = 0, gemm_tuned_variant = 0;
  // Wall time spent choosing algorithms (heuristics, checks and the timed
  // tuning runs): start-up cost, not step time.
  double gemm_tuning_seconds = 0.0;
  // The tuning cache (GpuRuntime::set_gemm_tuning_cache), what this GPU and
  // library are called in it, plans taken from it (checked: the same bits)
  // and cached choices left out (refused by cuBLASLt or other bits).
  std::shared_ptr<GemmTuningCache> gemm_cache;
  std::string gemm_cache_gpu, gemm_cache_library;
  int64_t gemm_cache_hits = 0, gemm_cache_rejected = 0;

  // cuBLASLt and cuBLAS share one workspace: both run on `stream`, one after
  // the other. cuBLASLt's heuristic may pick algorithms that need up to
  // kGemmWorkspaceBytes (what NVIDIA advises for Hopper); the arena grows to
  // the most that a chosen (or, while tuning, a timed) algorithm needs, often
  // far less (matmul.cu). cuBLAS's own GEMMs take all kGemmWorkspaceBytes of
  // it (blas_workspace).
  static constexpr size_t kGemmWorkspaceBytes = size_t(32) << 20;
  DeviceArena gemm_workspace;
  void* blas_workspace_set = nullptr;  // the pointer cuBLAS was last given (blas_workspace)
  DeviceArena cudnn_workspace;     // sized by the largest SDPA plan built
  DeviceArena scratch;             // per-op temporaries (see each .cu file)
  DeviceArena scratch_small;       // small temporaries needed while `scratch` is in use
  DeviceArena attention_pad;       // zero-padded copies of the heads (attention.cu, odd head sizes)
  // Deferred folds (column_sum.h, FoldScope): while defer_folds is on,
  // the ops on `stream` put their partial column sums in fold_arena and
  // record their folds in `folds`; fold_flush launches them as one kernel.
  bool defer_folds = false;
  std::vector<PendingFold> folds;
  DeviceArena fold_arena;
  size_t fold_used = 0;  // bytes of fold_arena taken by the pending folds

  MatmulPlanCache* matmul_plans = nullptr;
  SdpaPlanCache* sdpa_plans = nullptr;

  GpuHandles() = default;
  ~GpuHandles();
  GpuHandles(const GpuHandles&) = delete;
  GpuHandles& operator=(const GpuHandles&) = delete;
};

// "GEMM tuning: ..." for the logs; "" when nothing was tuned (matmul.cu).
std::string gemm_tuning_note(const GpuHandles& h);

// "GPU workspaces: GEMM ... MiB, ..." for the logs: what the workspaces and
// arenas hold now (part of the peak memory beside the model's buffers).
std::string workspace_note(const GpuHandles& h);

// Makes sure cuBLAS (h.blas) has its kGemmWorkspaceBytes of gemm_workspace
// as its user workspace (the arena may have moved since the last call); call
// it before every h.blas launch. A user workspace keeps cuBLAS from
// allocating inside a graph capture (matmul.cu).
void blas_workspace(GpuHandles& h, cudaStream_t stream);

// Defined in matmul.cu / attention.cu: free the plan caches.
void destroy_matmul_plans(MatmulPlanCache* cache);
void destroy_sdpa_plans(SdpaPlanCache* cache);

#else  // !VIT_WITH_CUDA: the class exists, using it is an error

struct GpuHandles {};

inline GpuRuntime::GpuRuntime(int, bool) {
  VIT_THROW("a GPU runtime was requested, but vit_hpc was built without CUDA");
}
inline GpuRuntime::~GpuRuntime() = default;
inline Context GpuRuntime::context() const { return Context{}; }
inline void GpuRuntime::synchronize() {}
inline int GpuRuntime::device_index() const { return -1; }
inline void GpuRuntime::set_tf32(bool) {}
inline void GpuRuntime::set_sdpa_deterministic(bool) {}
inline void GpuRuntime::set_attention_backward_short(bool) {}
inline void GpuRuntime::set_attention_backward_wgmma(bool) {}
inline void GpuRuntime::set_attention_forward_wgmma(bool) {}
inline void GpuRuntime::set_gemm_autotune(bool) {}
inline void GpuRuntime::set_gemm_autotune_wide(bool) {}
inline void GpuRuntime::set_gemm_tuning_cache(const std::string&) {}
inline size_t GpuRuntime::save_gemm_tuning_cache() { return 0; }
inline FoldScope::FoldScope(const Context&) {}
inline FoldScope::~FoldScope() noexcept(false) {}
inline void FoldScope::flush() {}

#endif

}  // namespace vit
