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

namespace vit {

// Debug synchronisation: when on, every checked GPU operation (kernel launch,
// cuBLAS(Lt) and cuDNN call) is followed by a device synchronisation and an
// error check, so a kernel that faults or a library call that fails while
// running is reported at the op that caused it, not at some later sync. Off
// by default (it serialises the host and the GPU); on when the environment
// has VIT_DEBUG_SYNC=1 or the build was configured with -DVIT_DEBUG_SYNC=ON.
// It must be off while a stream is being captured into a CUDA graph.
bool cuda_debug_sync();
void set_cuda_debug_sync(bool on);

// Called after a successful GPU op: in debug mode synchronises and throws
// with file:line and `what` if anything queued so far failed.
void cuda_debug_sync_point(const char* file, int line, const char* what);
// After a kernel launch: the launch error (bad configuration, no kernel
// image), then the debug synchronisation point.
void cuda_check_launch(const char* file, int line);

}  // namespace vit

// After a kernel launch: catches bad launch configurations at once, and in
// debug-sync mode faults inside the kernel.
#define VIT_CUDA_CHECK_LAUNCH() ::vit::cuda_check_launch(__FILE__, __LINE__)
