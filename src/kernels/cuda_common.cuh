// Shared helpers of the CUDA kernels (included by src/kernels/*.cu only).
//
// - check macros for cuBLAS(Lt) and cuDNN that throw vit::Error with the
//   failing call and a hint;
// - element types: device load/store between float and fp32/bf16/fp16, and a
//   switch from the runtime DType to a template parameter;
// - 16-byte packs, so that memory-bound kernels move 16 bytes per thread and
//   access (8 bf16/fp16 or 4 fp32 values), with a scalar path for tensors
//   whose size or address does not allow it (odd small shapes, views);
// - argument checks that name the op and the tensor.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "core/context.h"
#include "core/cuda_check.h"
#include "core/error.h"
#include "core/tensor.h"
#include "kernels/gpu_context.h"

#define VIT_CUBLAS_CHECK(call)                                                                  \
  do {                                                                                          \
    cublasStatus_t vit_st_ = (call);                                                            \
    if (vit_st_ != CUBLAS_STATUS_SUCCESS) {                                                     \
      ::vit::throw_error(__FILE__, __LINE__,                                                    \
                         ::vit::str_cat(#call, " failed: ", cublasGetStatusString(vit_st_),     \
                                        " (CUBLASLT_LOG_LEVEL=5 prints cuBLASLt's reasons)"));  \
    }                                                                                           \
    ::vit::cuda_debug_sync_point(__FILE__, __LINE__, #call);                                    \
  } while (0)

#define VIT_CUDNN_CHECK(call)                                                                   \
  do {                                                                                          \
    cudnnStatus_t vit_st_ = (call);                                                             \
    if (vit_st_ != CUDNN_STATUS_SUCCESS) {                                                      \
      char vit_msg_[512] = {0};                                                                 \
      cudnnGetLastErrorString(vit_msg_, sizeof(vit_msg_));                                      \
      ::vit::throw_error(__FILE__, __LINE__,                                                    \
                         ::vit::str_cat(#call, " failed: ", cudnnGetErrorString(vit_st_), " ",  \
                                        vit_msg_, " (CUDNN_LOGERR_DBG=1 CUDNN_LOGDEST_DBG=stderr " \
                                        "prints cuDNN's reasons)"));                            \
    }                                                                                           \
    ::vit::cuda_debug_sync_point(__FILE__, __LINE__, #call);                                    \
  } while (0)

namespace vit::kernels::cuda_detail {

using bf16 = __nv_bfloat16;
using fp16 = __half;

// ---------------------------------------------------------------------------
// Element types
// ---------------------------------------------------------------------------
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(fp16 x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ fp16 from_f<fp16>(float x) { return __float2half_rn(x); }

// Runs `body` with `T` bound to the C++ type of `dtype`.
#define VIT_DTYPE_SWITCH(dtype, T, ...)                                  \
  do {                                                                   \
    switch (dtype) {                                                     \
      case ::vit::DType::F32: {                                          \
        using T = float;                                                 \
        __VA_ARGS__;                                                     \
        break;                                                           \
      }                                                                  \
      case ::vit::DType::BF16: {                                         \
        using T = ::vit::kernels::cuda_detail::bf16;                     \
        __VA_ARGS__;                                                     \
        break;                                                           \
      }                                                                  \
      case ::vit::DType::F16: {                                          \
        using T = ::vit::kernels::cuda_detail::fp16;                     \
        __VA_ARGS__;                                                     \
        break;                                                           \
      }                                                                  \
    }                                                                    \
  } while (0)

inline cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
  }
  return CUDA_R_32F;
}

// ---------------------------------------------------------------------------
// 16-byte packs
// ---------------------------------------------------------------------------
template <typename T>
struct alignas(16) Pack {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

template <typename T>
__device__ __forceinline__ Pack<T> load_pack(const T* p) {
  Pack<T> r;
  *reinterpret_cast<int4*>(&r) = __ldg(reinterpret_cast<const int4*>(p));
  return r;
}
template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T>& r) {
  *reinterpret_cast<int4*>(p) = *reinterpret_cast<const int4*>(&r);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Asynchronous 16-byte copies from global to shared memory. Each thread
// waits only for its own copies: cp_async_wait<N>() returns once all but this
// thread's N most recently committed groups have landed. Before sm_80 the
// copy is a plain load and store and the waits have nothing to do.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(smem)), "l"(gmem));
#else
  *reinterpret_cast<int4*>(smem) = *reinterpret_cast<const int4*>(gmem);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// Opts a kernel in to `bytes` of dynamic shared memory on the current device
// (a launch above 48 KiB needs it). The attribute belongs to the function on
// each device and stays set, so it is set once per (kernel, device) and
// raised only when a launch needs more, not with a driver call at every
// launch on a step's path.
inline void allow_dynamic_smem(const void* kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return;
  int device = 0;
  VIT_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, size_t> granted;
  std::lock_guard<std::mutex> lock(mu);
  size_t& have = granted[{kernel, device}];
  if (bytes <= have) return;
  VIT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  have = bytes;
}
template <typename... Args>
void allow_dynamic_smem(void (*kernel)(Args...), size_t bytes) {
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), bytes);
}

// Grid for a grid-stride loop over `n` items: enough blocks to fill the GPU
// a few times over, never more than the work needs.
inline int grid_for(int64_t n, int threads, int num_sms) {
  const int64_t need = (n + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(num_sms > 0 ? num_sms : 132) * 8;
  return static_cast<int>(need < 1 ? 1 : (need < cap ? need : cap));
}

// ---------------------------------------------------------------------------
// Context and argument checks
// ---------------------------------------------------------------------------
inline GpuHandles& gpu_of(const Context& ctx, const char* op) {
  VIT_CHECK(ctx.gpu != nullptr, op, ": the Context has no GPU handles (make it with GpuRuntime::context())");
  return *ctx.gpu;
}
inline cudaStream_t stream_of(const Context& ctx) { return static_cast<cudaStream_t>(ctx.stream); }

inline void check_gpu(const Tensor& t, const char* op, const char* name) {
  VIT_CHECK(t.defined(), op, ": tensor '", name, "' is undefined");
  VIT_CHECK(t.device == Device::CUDA, op, ": tensor '", name, "' lives on the ", device_name(t.device),
            ", expected cuda");
}
inline void check_dtype(const Tensor& t, DType want, const char* op, const char* name) {
  VIT_CHECK(t.dtype == want, op, ": tensor '", name, "' is ", dtype_name(t.dtype), ", expected ",
            dtype_name(want));
}
inline void check_numel(const Tensor& t, int64_t want, const char* op, const char* name) {
  VIT_CHECK(t.numel() == want, op, ": tensor '", name, "' ", t.shape_str(), " has ", t.numel(),
            " elements, expected ", want);
}

}  // namespace vit::kernels::cuda_detail
