// NcclCommunicator: the Communicator over NCCL (CUDA builds only).
//
// - Built collectively over an MPI communicator: its rank 0 asks NCCL for a
//   unique id, MPI broadcasts it, every rank calls ncclCommInitRank. The GPU
//   must already be selected (bootstrap.h's choose_device does cudaSetDevice).
// - NCCL takes only device pointers. Calls with Device::CPU go to an
//   MpiCommunicator over the same ranks that this class keeps inside, so a
//   plugin may hand it host data (a loss value, a flag) without knowing.
// - Calls with Device::CUDA enqueue on `stream` and return at once; the
//   result is ready when the stream reaches that point.
// - bf16/fp16 reductions run in the 16-bit type inside NCCL (ncclBfloat16 /
//   ncclFloat16); Avg is ncclAvg.
// - barrier() is the inner MPI barrier: host threads meet, GPU work is not
//   waited for.
// - Two ranks on one GPU are refused by NCCL ("duplicate GPU"): use
//   make_communicator (bootstrap.h), which picks MPI in that case.
// - The collective watchdog (watchdog.h) polls an event recorded after each
//   operation and the communicator's asynchronous errors, and aborts it when
//   a peer never arrives.
// Several NCCL communicators (world, tp, pp, dp) must be used in the same
// order on every rank, or launched on one stream, as with any NCCL program.
#pragma once

#ifdef VIT_WITH_CUDA

#include <mpi.h>

#include <cstdint>
#include <memory>

#include "comm/communicator.h"
#include "comm/mpi_communicator.h"

struct ncclComm;  // nccl.h: typedef struct ncclComm* ncclComm_t

namespace vit::comm {

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(MPI_Comm comm);  // collective over comm
  ~NcclCommunicator() override;

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  const char* backend() const override { return "nccl"; }
  // The MPI communicator over the same ranks (host data goes there).
  MpiCommunicator& host_communicator() { return *host_; }
  ncclComm* nccl_comm() const { return nccl_; }
  int gpu_index() const { return gpu_index_; }

  void all_reduce(void* buf, size_t count, DType dtype, ReduceOp op, Device device,
                  void* stream = nullptr) override;
  void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op, Device device,
                      void* stream = nullptr) override;
  void all_gather(const void* send, void* recv, size_t send_count, DType dtype, Device device,
                  void* stream = nullptr) override;
  void broadcast(void* buf, size_t count, DType dtype, int root, Device device, void* stream = nullptr) override;
  void send(const void* buf, size_t count, DType dtype, int peer, Device device, void* stream = nullptr) override;
  void recv(void* buf, size_t count, DType dtype, int peer, Device device, void* stream = nullptr) override;
  void send_recv(const void* send_buf, size_t send_count, int send_peer, void* recv_buf, size_t recv_count,
                 int recv_peer, DType dtype, Device device, void* stream = nullptr) override;
  void barrier() override;

 private:
  void check_peer(int peer, const char* what) const;

  // After enqueueing an operation: the watchdog polls an event behind it.
  void watch(const char* op, size_t count, DType dtype, void* stream);

  std::unique_ptr<MpiCommunicator> host_;
  ncclComm* nccl_ = nullptr;
  uint64_t seq_ = 0;
  int gpu_index_ = -1;
};

}  // namespace vit::comm

#endif  // VIT_WITH_CUDA
