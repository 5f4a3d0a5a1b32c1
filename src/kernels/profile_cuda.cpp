// Timing events of the op profiler (profile.h), CUDA builds only.
#include <cuda_runtime.h>

#include "core/cuda_check.h"

namespace vit::kernels {

void* profile_event_create() {
  cudaEvent_t e = nullptr;
  VIT_CUDA_CHECK(cudaEventCreate(&e));  // with timing
  return e;
}

void profile_event_destroy(void* e) { cudaEventDestroy(static_cast<cudaEvent_t>(e)); }

void profile_event_record(void* e, void* stream) {
  VIT_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(e), static_cast<cudaStream_t>(stream)));
}

float profile_elapsed_ms(void* start, void* end) {
  float ms = 0.0f;
  VIT_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)));
  return ms;
}

}  // namespace vit::kernels
