#include "core/device.h"

#include <sys/resource.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#include "core/error.h"

namespace vit {

// Implemented in device_cuda.cpp when built with CUDA.
#ifdef VIT_WITH_CUDA
void* cuda_alloc_device(size_t bytes);
void cuda_free_device(void* p);
void* cuda_alloc_pinned(size_t bytes);
void cuda_free_pinned(void* p);
void cuda_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);
void cuda_zero(void* p, size_t bytes);
int cuda_count_devices();
void cuda_set_home_gpu(int index);
int cuda_home_gpu();
void cuda_set_blocking_waits();
#endif

namespace {

struct Counters {
  std::atomic<size_t> current{0};
  std::atomic<size_t> peak{0};
};
Counters g_counters[2];

void count_alloc(Device d, size_t bytes) {
  Counters& c = g_counters[static_cast<int>(d)];
  const size_t now = c.current.fetch_add(bytes) + bytes;
  size_t peak = c.peak.load();
  while (now > peak && !c.peak.compare_exchange_weak(peak, now)) {
  }
}

void count_free(Device d, size_t bytes) { g_counters[static_cast<int>(d)].current.fetch_sub(bytes); }

}  // namespace

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

bool built_with_cuda() {
#ifdef VIT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef VIT_WITH_CUDA
  return cuda_count_devices();
#else
  return 0;
#endif
}

void set_home_gpu(int index) {
#ifdef VIT_WITH_CUDA
  cuda_set_home_gpu(index);
#else
  (void)index;
#endif
}

void set_gpu_blocking_waits() {
#ifdef VIT_WITH_CUDA
  cuda_set_blocking_waits();
#endif
}

int home_gpu() {
#ifdef VIT_WITH_CUDA
  return cuda_home_gpu();
#else
  return -1;
#endif
}

Buffer::Buffer(size_t bytes, Device device, HostMemory host)
    : bytes_(bytes), device_(device), host_(host) {
  if (bytes == 0) return;
  if (device == Device::CUDA) {
#ifdef VIT_WITH_CUDA
    data_ = cuda_alloc_device(bytes);
#else
    VIT_THROW("a GPU buffer was requested but vit_hpc was built without CUDA");
#endif
  } else {
#ifdef VIT_WITH_CUDA
    if (host == HostMemory::Pinned && cuda_count_devices() > 0) {
      data_ = cuda_alloc_pinned(bytes);
    } else {
      host_ = HostMemory::Pageable;
    }
#else
    host_ = HostMemory::Pageable;
#endif
    if (data_ == nullptr) {
      // 64-byte alignment suits AVX-512 loads and cache lines.
      const size_t rounded = (bytes + 63) / 64 * 64;
      data_ = std::aligned_alloc(64, rounded);
      VIT_CHECK(data_ != nullptr, "host allocation of ", bytes, " bytes failed");
    }
  }
  count_alloc(device_, bytes_);
}

Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      bytes_(std::exchange(o.bytes_, 0)),
      device_(o.device_),
      host_(o.host_) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    device_ = o.device_;
    host_ = o.host_;
  }
  return *this;
}

namespace {
std::atomic<uint64_t> g_device_frees{0};
}  // namespace

uint64_t device_frees() { return g_device_frees.load(std::memory_order_relaxed); }

void Buffer::release() {
  if (data_ == nullptr) return;
  count_free(device_, bytes_);
  if (device_ == Device::CUDA) g_device_frees.fetch_add(1, std::memory_order_relaxed);
#ifdef VIT_WITH_CUDA
  if (device_ == Device::CUDA) {
    cuda_free_device(data_);
  } else if (host_ == HostMemory::Pinned) {
    cuda_free_pinned(data_);
  } else {
    std::free(data_);
  }
#else
  std::free(data_);
#endif
  data_ = nullptr;
  bytes_ = 0;
}

void Buffer::zero() {
  if (data_ == nullptr) return;
  if (device_ == Device::CPU) {
    std::memset(data_, 0, bytes_);
    return;
  }
#ifdef VIT_WITH_CUDA
  cuda_zero(data_, bytes_);
#endif
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::CPU && src_device == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef VIT_WITH_CUDA
  cuda_copy(dst, dst_device, src, src_device, bytes);
#else
  VIT_THROW("GPU copy requested but vit_hpc was built without CUDA");
#endif
}

MemoryStats memory_stats(Device device) {
  const Counters& c = g_counters[static_cast<int>(device)];
  return MemoryStats{c.current.load(), c.peak.load()};
}

void reset_peak_memory(Device device) {
  Counters& c = g_counters[static_cast<int>(device)];
  c.peak.store(c.current.load());
}

size_t peak_resident_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<size_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

}  // namespace vit
