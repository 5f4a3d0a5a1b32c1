// The GPU half of the collective watchdog (watchdog_gpu.h): an event after
// every NCCL operation, polled by the monitor thread; NCCL's asynchronous
// errors; ncclCommAbort. CUDA builds only.
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdio>
#include <deque>
#include <mutex>
#include <vector>

#include "comm/watchdog_gpu.h"
#include "core/error.h"

namespace vit::comm::detail {

namespace {

class CudaGpuWatch final : public GpuWatch {
 public:
  ~CudaGpuWatch() override {
    // The process is ending (static destruction): events are released with
    // the context; touching CUDA here could fail after it was torn down.
  }

  void enqueued(const GpuPending& what, void* stream, void* nccl_comm) override {
    (void)nccl_comm;
    cudaEvent_t ev = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        ev = free_.back();
        free_.pop_back();
      }
    }
    if (ev == nullptr && cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess) {
      (void)cudaGetLastError();  // not watched; never fail the collective for the watchdog's sake
      return;
    }
    if (cudaEventRecord(ev, static_cast<cudaStream_t>(stream)) != cudaSuccess) {
      (void)cudaGetLastError();
      std::lock_guard<std::mutex> lock(mu_);
      free_.push_back(ev);
      return;
    }
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) (void)cudaGetLastError();
    std::lock_guard<std::mutex> lock(mu_);
    device_ = device;
    pending_.push_back({what, ev});
  }

  void register_comm(void* nccl_comm, const std::vector<int>* group) override {
    std::lock_guard<std::mutex> lock(mu_);
    comms_.push_back({static_cast<ncclComm_t>(nccl_comm), group});
  }

  void unregister_comm(void* nccl_comm) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < comms_.size(); ++i) {
      if (comms_[i].comm == static_cast<ncclComm_t>(nccl_comm)) {
        comms_.erase(comms_.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
    }
  }

  bool oldest_pending(GpuPending* out) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_.empty()) return false;
    select_device();
    while (!pending_.empty()) {
      const cudaError_t q = cudaEventQuery(pending_.front().event);
      if (q == cudaErrorNotReady) break;
      if (q != cudaSuccess) (void)cudaGetLastError();  // an error surfaces on the main thread's own checks
      free_.push_back(pending_.front().event);
      pending_.pop_front();
    }
    if (pending_.empty()) return false;
    *out = pending_.front().what;
    return true;
  }

  std::string async_error() override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Comm& c : comms_) {
      ncclResult_t async = ncclSuccess;
      const ncclResult_t r = ncclCommGetAsyncError(c.comm, &async);
      if (r != ncclSuccess) return str_cat("ncclCommGetAsyncError failed: ", ncclGetErrorString(r));
      if (async != ncclSuccess && async != ncclInProgress) {
        const char* detail = ncclGetLastError(c.comm);
        return str_cat("NCCL reported an asynchronous error: ", ncclGetErrorString(async),
                       detail && *detail ? str_cat(" (", detail, ")") : std::string(),
                       " (NCCL_DEBUG=INFO shows which peer or transport failed)");
      }
    }
    return "";
  }

  void abort_all() override {
    std::vector<Comm> comms;
    {
      std::lock_guard<std::mutex> lock(mu_);
      select_device();
      comms = comms_;
      comms_.clear();
    }
    for (const Comm& c : comms) {
      const ncclResult_t r = ncclCommAbort(c.comm);
      if (r != ncclSuccess) std::fprintf(stderr, "vit_hpc: ncclCommAbort: %s\n", ncclGetErrorString(r));
    }
  }

 private:
  struct Pending {
    GpuPending what;
    cudaEvent_t event;
  };
  struct Comm {
    ncclComm_t comm;
    const std::vector<int>* group;
  };
  // The monitor thread queries events of the main thread's GPU.
  void select_device() {
    if (device_ >= 0 && cudaSetDevice(device_) != cudaSuccess) (void)cudaGetLastError();
  }

  std::mutex mu_;
  std::deque<Pending> pending_;
  std::vector<cudaEvent_t> free_;
  std::vector<Comm> comms_;
  int device_ = -1;
};

}  // namespace

std::unique_ptr<GpuWatch> make_gpu_watch() { return std::make_unique<CudaGpuWatch>(); }

}  // namespace vit::comm::detail
