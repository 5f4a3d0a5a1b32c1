// How an op reaches its implementation.
//
// Every op family declares the same function twice, in namespace cpu (plain
// C++ reference, fp32, OpenMP/OpenBLAS) and in namespace cuda (the CUDA
// version, every dtype), and a public inline function that picks one by
// ctx.device. A build without CUDA has no cuda:: symbols at all; asking for
// the GPU there is an error, not a silent fallback.
#pragma once

#include "core/context.h"
#include "core/error.h"
#include "core/tensor.h"
#include "kernels/profile.h"

namespace vit::kernels {
[[noreturn]] inline void no_cuda(const char* op) {
  VIT_THROW("kernel ", op, " was asked to run on the GPU, but vit_hpc was built without CUDA");
}
// Bytes of tensors (undefined ones count 0), for VIT_DISPATCH_BYTES.
inline double tensor_bytes() { return 0.0; }
template <typename... Rest>
double tensor_bytes(const Tensor& t, const Rest&... rest) {
  return (t.defined() ? static_cast<double>(t.bytes()) : 0.0) + tensor_bytes(rest...);
}
}  // namespace vit::kernels

// Each call is timed by the op profiler when it is enabled (profile.h).
#ifdef VIT_WITH_CUDA
#define VIT_DISPATCH(ctx, fn, ...)                                                            \
  do {                                                                                        \
    const ::vit::kernels::ProfileScope vit_profile_scope_((ctx), #fn);                        \
    (ctx).on_gpu() ? ::vit::kernels::cuda::fn(__VA_ARGS__) : ::vit::kernels::cpu::fn(__VA_ARGS__); \
  } while (0)
#else
#define VIT_DISPATCH(ctx, fn, ...)                                                            \
  do {                                                                                        \
    const ::vit::kernels::ProfileScope vit_profile_scope_((ctx), #fn);                        \
    (ctx).on_gpu() ? ::vit::kernels::no_cuda(#fn) : ::vit::kernels::cpu::fn(__VA_ARGS__);     \
  } while (0)
#endif

// The same for an op bound by memory: `bytes` is what a call reads and
// writes (profile.h), evaluated only while the profiler records.
#ifdef VIT_WITH_CUDA
#define VIT_DISPATCH_BYTES(ctx, bytes, fn, ...)                                                 \
  do {                                                                                        \
    const ::vit::kernels::ProfileScope vit_profile_scope_(                                    \
        (ctx), #fn, ::vit::kernels::OpProfiler::instance().enabled() ? static_cast<double>(bytes) : 0.0); \
    (ctx).on_gpu() ? ::vit::kernels::cuda::fn(__VA_ARGS__) : ::vit::kernels::cpu::fn(__VA_ARGS__); \
  } while (0)
#else
#define VIT_DISPATCH_BYTES(ctx, bytes, fn, ...)                                                 \
  do {                                                                                        \
    const ::vit::kernels::ProfileScope vit_profile_scope_(                                    \
        (ctx), #fn, ::vit::kernels::OpProfiler::instance().enabled() ? static_cast<double>(bytes) : 0.0); \
    (ctx).on_gpu() ? ::vit::kernels::no_cuda(#fn) : ::vit::kernels::cpu::fn(__VA_ARGS__);     \
  } while (0)
#endif

// Declares fn with one signature in both namespaces.
#define VIT_DECLARE_KERNEL(ret, fn, ...)  \
  namespace cpu {                         \
  ret fn(__VA_ARGS__);                    \
  }                                       \
  namespace cuda {                        \
  ret fn(__VA_ARGS__);                    \
  }
