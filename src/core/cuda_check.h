// CUDA runtime check macro (CUDA translation units only).
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

#define VIT_CUDA_CHECK(call)                                                          \
  do {                                                                                \
    cudaError_t vit_err_ = (call);                                                    \
    if (vit_err_ != cudaSuccess) {                                                    \
      ::vit::throw_error(__FILE__, __LINE__,                                          \
                         ::vit::str_cat(#call, " failed: ", cudaGetErrorString(vit_err_), \
                                        " (try CUDA_LAUNCH_BLOCKING=1 to locate it)"));  \
    }                                                                                 \
  } while (0)

// After a kernel launch: catches bad launch configurations at once.
#define VIT_CUDA_CHECK_LAUNCH() VIT_CUDA_CHECK(cudaGetLastError())
