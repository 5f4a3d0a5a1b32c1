// CUDA side of device.h (compiled only when VIT_WITH_CUDA).
#include "core/cuda_check.h"
#include "core/device.h"

#include <atomic>
#include <cstdlib>
#include <string>

namespace vit {

namespace {

// The GPU this process works on (-1 until one is chosen). CUDA's current
// device is per host thread and starts at 0 in every new thread: a loader
// thread that allocated pinned memory, or any thread that allocated or copied
// device memory, would otherwise do it on GPU 0 (a context there for every
// rank of a multi-GPU node, and device memory on the wrong GPU).
std::atomic<int> g_home_gpu{-1};

void use_home_gpu() {
  const int home = g_home_gpu.load();
  if (home < 0) return;
  int current = -1;
  VIT_CUDA_CHECK(cudaGetDevice(&current));
  if (current != home) VIT_CUDA_CHECK(cudaSetDevice(home));
}

}  // namespace

#ifndef VIT_DEBUG_SYNC_DEFAULT
#define VIT_DEBUG_SYNC_DEFAULT 0
#endif

std::atomic<int> g_debug_sync{-1};  // -1: not decided yet

bool cuda_debug_sync() {
  int v = g_debug_sync.load();
  if (v < 0) {
    const char* env = std::getenv("VIT_DEBUG_SYNC");
    v = env ? (std::string(env) != "0" && std::string(env) != "") : VIT_DEBUG_SYNC_DEFAULT;
    g_debug_sync.store(v);
  }
  return v == 1;
}

void set_cuda_debug_sync(bool on) { g_debug_sync.store(on ? 1 : 0); }

void cuda_debug_sync_point(const char* file, int line, const char* what) {
  if (!cuda_debug_sync()) return;
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) {
    throw_error(file, line, str_cat(what, ": the GPU reported '", cudaGetErrorString(err),
                                    "' at the debug synchronisation after this op (VIT_DEBUG_SYNC)"));
  }
}

void cuda_check_launch(const char* file, int line) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw_error(file, line, str_cat("kernel launch failed: ", cudaGetErrorString(err),
                                    " (VIT_DEBUG_SYNC=1 synchronises after every op to locate faults)"));
  }
  cuda_debug_sync_point(file, line, "kernel");
}

void cuda_set_home_gpu(int index) {
  VIT_CUDA_CHECK(cudaSetDevice(index));
  g_home_gpu.store(index);
}

int cuda_home_gpu() { return g_home_gpu.load(); }

void cuda_set_blocking_waits() {
  // On a device already in use this replaces the flags (CUDA 12+).
  VIT_CUDA_CHECK(cudaSetDeviceFlags(cudaDeviceScheduleBlockingSync));
}

void* cuda_alloc_device(size_t bytes) {
  use_home_gpu();
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
  use_home_gpu();
  void* p = nullptr;
  VIT_CUDA_CHECK(cudaMallocHost(&p, bytes));
  return p;
}

void cuda_free_pinned(void* p) { cudaFreeHost(p); }

// copy_bytes and Buffer::zero promise that the destination holds the data
// when they return. cudaMemcpy alone does not keep that promise: from
// pageable host memory it returns once the data is staged, before the DMA
// into device memory has finished; device-to-device copies and cudaMemset
// return at once. All of them run on the legacy default stream, which the
// non-blocking streams every kernel runs on do not wait for, so a kernel
// queued right after could read the destination before it was written (the
// all-zero logits of issue 8: the weights' upload raced the cast that read
// them). Waiting for the legacy stream closes that window.
void cuda_copy(void* dst, Device, const void* src, Device, size_t bytes) {
  use_home_gpu();
  VIT_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
  VIT_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
}

void cuda_zero(void* p, size_t bytes) {
  use_home_gpu();
  VIT_CUDA_CHECK(cudaMemset(p, 0, bytes));
  VIT_CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
}

int cuda_count_devices() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no GPU: clear the sticky error
    return 0;
  }
  return n;
}

}  // namespace vit
