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
#include "kernels/profile.h"

namespace vit::kernels {
[[noreturn]] inline void no_cuda(const char* op) {
  VIT_THROW("kernel ", op, " was asked to run on the GPU, but vit_hpc was built without CUDA");
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

// Declares fn with one signature in both namespaces.
#define VIT_DECLARE_KERNEL(ret, fn, ...)  \
  namespace cpu {                         \
  ret fn(__VA_ARGS__);                    \
  }                                       \
  namespace cuda {                        \
  ret fn(__VA_ARGS__);                    \
  }
