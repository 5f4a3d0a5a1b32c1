// Timing events of ChunkTimeline and StepGapMeter (timing_event.h; CUDA builds only).
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "parallel/timing_event.h"

namespace vit::parallel {

void* timeline_event_create() {
  cudaEvent_t e = nullptr;
  VIT_CUDA_CHECK(cudaEventCreate(&e));  // with timing
  return e;
}

void timeline_event_destroy(void* e) { cudaEventDestroy(static_cast<cudaEvent_t>(e)); }

void timeline_event_record(void* e, void* stream) {
  VIT_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(e), static_cast<cudaStream_t>(stream)));
}

float timeline_event_ms(void* from, void* to) {
  float ms = 0.0f;
  VIT_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(from), static_cast<cudaEvent_t>(to)));
  return ms;
}

}  // namespace vit::parallel
