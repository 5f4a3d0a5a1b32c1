// CUDA side of device.h (compiled only when VIT_WITH_CUDA).
#include "core/cuda_check.h"
#include "core/device.h"

namespace vit {

void* cuda_alloc_device(size_t bytes) {
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    cudaGetLastError();
    cudaMemGetInfo(&free_b, &total_b);
    VIT_THROW("cudaMalloc of ", bytes / (1 << 20), " MiB failed (", cudaGetErrorString(err), "); ",
              free_b / (1 << 20), " MiB free of ", total_b / (1 << 20),
              " MiB: lower train.batch_size or use a sharding plugin");
  }
  return p;
}

void cuda_free_device(void* p) { cudaFree(p); }

void* cuda_alloc_pinned(size_t bytes) {
  void* p = nullptr;
  VIT_CUDA_CHECK(cudaMallocHost(&p, bytes));
  return p;
}

void cuda_free_pinned(void* p) { cudaFreeHost(p); }

void cuda_copy(void* dst, Device, const void* src, Device, size_t bytes) {
  VIT_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
}

void cuda_zero(void* p, size_t bytes) { VIT_CUDA_CHECK(cudaMemset(p, 0, bytes)); }

int cuda_count_devices() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no GPU: clear the sticky error
    return 0;
  }
  return n;
}

}  // namespace vit
