// GpuRuntime and GpuHandles (CUDA builds): creation and teardown of the
// stream, the cuBLASLt / cuBLAS / cuDNN handles and the workspaces.
//
// Teardown order matters: plan caches hold cuDNN and cuBLASLt descriptors, so
// they go before the handles, and the stream is synchronised first so that no
// queued kernel still reads a workspace being freed.
#include "kernels/gpu_context.h"

#include <cstdio>
#include <exception>
#include <string>

#include "core/cuda_check.h"
#include "core/error.h"
#include "kernels/column_sum.h"

#define VIT_LIB_CHECK(call, ok, what)                                            \
  do {                                                                           \
    auto vit_st_ = (call);                                                       \
    if (vit_st_ != (ok)) VIT_THROW(#call, " failed with status ", int(vit_st_), " (", what, ")"); \
  } while (0)

namespace vit {

void* DeviceArena::get(size_t bytes, cudaStream_t stream) {
  if (bytes <= buf_.bytes()) return buf_.data();
  // The old block may still be read by queued work: wait before freeing it.
  VIT_CUDA_CHECK(cudaStreamSynchronize(stream));
  buf_.release();
  const size_t rounded = (bytes + (size_t(1) << 20) - 1) & ~((size_t(1) << 20) - 1);  // whole MiB
  buf_ = Buffer(rounded, Device::CUDA);
  return buf_.data();
}

GpuHandles::~GpuHandles() {
  if (stream) cudaStreamSynchronize(stream);
  destroy_sdpa_plans(sdpa_plans);
  destroy_matmul_plans(matmul_plans);
  sdpa_plans = nullptr;
  matmul_plans = nullptr;
  if (cudnn) cudnnDestroy(cudnn);
  if (blas) cublasDestroy(blas);
  if (lt) cublasLtDestroy(lt);
  if (stream) cudaStreamDestroy(stream);
}

GpuRuntime::GpuRuntime(int device_index, bool tf32) : handles_(std::make_unique<GpuHandles>()) {
  int count = 0;
  VIT_CUDA_CHECK(cudaGetDeviceCount(&count));
  VIT_CHECK(device_index >= 0 && device_index < count, "GPU ", device_index, " requested, but ", count,
            " GPU(s) are visible");
  GpuHandles& h = *handles_;
  h.device = device_index;
  h.tf32 = tf32;
  set_home_gpu(device_index);  // for this thread and every later one that allocates
  VIT_CUDA_CHECK(cudaDeviceGetAttribute(&h.num_sms, cudaDevAttrMultiProcessorCount, device_index));
  VIT_CUDA_CHECK(cudaDeviceGetAttribute(&h.cc_major, cudaDevAttrComputeCapabilityMajor, device_index));
  VIT_CUDA_CHECK(cudaDeviceGetAttribute(&h.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_index));
  VIT_CUDA_CHECK(cudaStreamCreateWithFlags(&h.stream, cudaStreamNonBlocking));
  VIT_LIB_CHECK(cublasLtCreate(&h.lt), CUBLAS_STATUS_SUCCESS, "cuBLASLt handle");
  VIT_LIB_CHECK(cublasCreate(&h.blas), CUBLAS_STATUS_SUCCESS, "cuBLAS handle");
  VIT_LIB_CHECK(cublasSetStream(h.blas, h.stream), CUBLAS_STATUS_SUCCESS, "cuBLAS stream");
  // The GEMM workspace is allocated on first use, as large as the algorithms
  // need (GpuHandles::gemm_workspace); cuBLAS gets its share before each of
  // its launches (blas_workspace).
  VIT_LIB_CHECK(cudnnCreate(&h.cudnn), CUDNN_STATUS_SUCCESS,
                "cuDNN handle: is libcudnn.so.9 on LD_LIBRARY_PATH and does it match the driver?");
  VIT_LIB_CHECK(cudnnSetStream(h.cudnn, h.stream), CUDNN_STATUS_SUCCESS, "cuDNN stream");
}

GpuRuntime::~GpuRuntime() {
  if (handles_) cudaSetDevice(handles_->device);
}

Context GpuRuntime::context() const {
  Context ctx;
  ctx.device = Device::CUDA;
  ctx.stream = handles_->stream;
  ctx.gpu = handles_.get();
  return ctx;
}

void GpuRuntime::synchronize() { VIT_CUDA_CHECK(cudaStreamSynchronize(handles_->stream)); }

int GpuRuntime::device_index() const { return handles_->device; }

void GpuRuntime::set_tf32(bool on) { handles_->tf32 = on; }

void GpuRuntime::set_sdpa_deterministic(bool on) { handles_->sdpa_deterministic = on; }
void GpuRuntime::set_attention_backward_short(bool on) { handles_->attention_backward_short = on; }
void GpuRuntime::set_attention_backward_wgmma(bool on) { handles_->attention_backward_wgmma = on; }
void GpuRuntime::set_attention_forward_wgmma(bool on) { handles_->attention_forward_wgmma = on; }

void GpuRuntime::set_gemm_autotune(bool on) { handles_->gemm_autotune = on; }
void GpuRuntime::set_gemm_autotune_wide(bool on) { handles_->gemm_autotune_wide = on; }

void GpuRuntime::set_gemm_tuning_cache(const std::string& path) {
  GpuHandles& h = *handles_;
  if (path.empty()) {
    h.gemm_cache.reset();
    return;
  }
  h.gemm_cache = std::make_shared<GemmTuningCache>(path);
  // What a cached algorithm is valid for: the GPU model (name, compute
  // capability, SM count) and the cuBLASLt version.
  cudaDeviceProp prop{};
  VIT_CUDA_CHECK(cudaGetDeviceProperties(&prop, h.device));
  std::string name = prop.name;
  for (char& c : name) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) c = '_';
  }
  h.gemm_cache_gpu = str_cat(name.empty() ? std::string("gpu") : name, "/sm", prop.major, prop.minor, "/",
                             prop.multiProcessorCount);
  h.gemm_cache_library = str_cat("cublasLt-", cublasLtGetVersion());
}

size_t GpuRuntime::save_gemm_tuning_cache() { return handles_->gemm_cache ? handles_->gemm_cache->save() : 0; }

FoldScope::FoldScope(const Context& ctx) {
  if (!ctx.gpu || ctx.gpu->defer_folds) return;  // the CPU, or an outer scope defers already
  h_ = ctx.gpu;
  kernels::cuda_detail::fold_flush(*h_);  // nothing should be pending; a fresh region of the arena
  h_->defer_folds = true;
}

FoldScope::~FoldScope() noexcept(false) {
  if (!h_) return;
  h_->defer_folds = false;
  if (std::uncaught_exceptions() > 0) {
    // The step is failing and its gradients are not used: drop the records
    // (throwing here would end the program).
    h_->folds.clear();
    h_->fold_used = 0;
    return;
  }
  kernels::cuda_detail::fold_flush(*h_);
}

void FoldScope::flush() {
  if (h_) kernels::cuda_detail::fold_flush(*h_);
}

std::string workspace_note(const GpuHandles& h) {
  auto mib = [](size_t b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(b) / 1048576.0);
    return std::string(buf);
  };
  return "GPU workspaces: GEMM " + mib(h.gemm_workspace.capacity()) + " MiB, cuDNN " +
         mib(h.cudnn_workspace.capacity()) + " MiB, scratch " +
         mib(h.scratch.capacity() + h.scratch_small.capacity() + h.attention_pad.capacity()) + " MiB, folds " +
         mib(h.fold_arena.capacity()) + " MiB";
}

}  // namespace vit
