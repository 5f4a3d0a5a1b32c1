// The GPU half of the collective watchdog (watchdog.h), private to src/comm:
// watchdog_cuda.cpp implements it in CUDA builds; elsewhere
// make_gpu_watch() returns nullptr.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace vit::comm::detail {

struct GpuPending {
  const char* op = "";
  const std::vector<int>* group = nullptr;
  uint64_t seq = 0;
  size_t count = 0;
  DType dtype = DType::F32;
  std::chrono::steady_clock::time_point since;
};

class GpuWatch {
 public:
  virtual ~GpuWatch() = default;
  // Main thread, right after enqueueing an NCCL operation on `stream`.
  virtual void enqueued(const GpuPending& what, void* stream, void* nccl_comm) = 0;
  virtual void register_comm(void* nccl_comm, const std::vector<int>* group) = 0;
  virtual void unregister_comm(void* nccl_comm) = 0;
  // Monitor thread: forgets the operations that completed; true and the
  // oldest one still pending when there is one.
  virtual bool oldest_pending(GpuPending* out) = 0;
  // Monitor thread: the first asynchronous NCCL error of a registered
  // communicator, described; "" when none.
  virtual std::string async_error() = 0;
  // ncclCommAbort on every registered communicator (unblocks their kernels).
  virtual void abort_all() = 0;
};

// nullptr without CUDA, or when no GPU is in use.
std::unique_ptr<GpuWatch> make_gpu_watch();

}  // namespace vit::comm::detail
