// CUDA side of stream.h (compiled only when VIT_WITH_CUDA).
#include "core/cuda_check.h"
#include "core/stream.h"

namespace vit {

void* cuda_stream_create() {
  cudaStream_t s = nullptr;
  VIT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}
void cuda_stream_destroy(void* s) { cudaStreamDestroy(static_cast<cudaStream_t>(s)); }
void cuda_stream_wait(void* s, void* e) {
  VIT_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(s), static_cast<cudaEvent_t>(e), 0));
}
void cuda_stream_sync(void* s) { VIT_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(s))); }
void* cuda_event_create() {
  cudaEvent_t e = nullptr;
  VIT_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return e;
}
void cuda_event_destroy(void* e) { cudaEventDestroy(static_cast<cudaEvent_t>(e)); }
void cuda_event_record(void* e, void* s) {
  VIT_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(e), static_cast<cudaStream_t>(s)));
}
void cuda_event_sync(void* e) { VIT_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(e))); }
void cuda_copy_async(void* dst, const void* src, size_t bytes, void* s) {
  VIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, static_cast<cudaStream_t>(s)));
}

}  // namespace vit
