// Devices and owned memory.
//
// A Buffer owns one allocation on the host (plain or page-locked) or on the
// GPU. Every Buffer allocation is counted, so "peak device memory" in the
// metrics is the high-water mark of what vit_hpc itself allocated (library
// workspaces that we allocate ourselves included), not a driver reading.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace vit {

enum class Device : uint8_t { CPU = 0, CUDA = 1 };
const char* device_name(Device d);

// True when this binary was built with CUDA (VIT_WITH_CUDA).
bool built_with_cuda();
// Number of visible GPUs; 0 when built without CUDA or when no driver/GPU.
int cuda_device_count();

enum class HostMemory : uint8_t { Pageable = 0, Pinned = 1 };

class Buffer {
 public:
  Buffer() = default;
  // Allocates `bytes` on `device` (uninitialised). HostMemory::Pinned asks for
  // page-locked host memory (falls back to pageable without CUDA).
  Buffer(size_t bytes, Device device, HostMemory host = HostMemory::Pageable);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  bool empty() const { return data_ == nullptr; }

  void zero();  // memset to 0; complete when it returns
  void release();

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_ = Device::CPU;
  HostMemory host_ = HostMemory::Pageable;
};

// The GPU this process works on. Once set, every thread that allocates,
// copies or zeroes GPU or pinned memory through this file switches to it
// first (a new host thread starts on GPU 0). No-op without CUDA; -1 = unset.
void set_home_gpu(int index);
int home_gpu();

// The host threads that wait for the home GPU (stream and event
// synchronisation) sleep until the GPU is done instead of spinning on a
// core (cudaDeviceScheduleBlockingSync). For runs whose CPU threads have
// their own work while the GPU computes (gemini's CPU AdamW): a spinning
// wait takes a core from them. No-op without CUDA.
void set_gpu_blocking_waits();

// Copy between any two places (host<->device, device<->device). Synchronous:
// dst holds the data when it returns. Work queued on other streams is not
// waited for: synchronise the stream that produced src before copying it.
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

// How many GPU Buffers have been freed since the process started. A captured
// CUDA graph (core/graph.h) holds raw device pointers: a change of this count
// means one of them may now point at freed or reused memory.
uint64_t device_frees();

struct MemoryStats {
  size_t current_bytes = 0;  // live Buffer bytes now
  size_t peak_bytes = 0;     // high-water mark since start or the last reset
};
MemoryStats memory_stats(Device device);
void reset_peak_memory(Device device);

// Peak resident set size of this process in bytes (CPU runs report this).
size_t peak_resident_bytes();

}  // namespace vit
