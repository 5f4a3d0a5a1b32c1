// MpiCommunicator: the Communicator over an MPI communicator and host memory.
//
// - fp32 reductions run as MPI_FLOAT. bf16/fp16 reductions widen to fp32 on
//   the host, reduce in fp32 and round back once, so the result is the
//   correctly rounded fp32 reduction (NCCL reduces in the 16-bit type and
//   rounds at each hop: the two may differ in the last bit).
// - Avg is Sum followed by a division by size() in fp32.
// - GPU data (Device::CUDA) is staged through a pinned host buffer: the
//   caller's stream is synchronised, the data copied down, reduced, copied
//   back. This is the path of ranks that share one GPU.
// - Long buffers are cut into chunks (kDefaultChunkBytes; tests pass a small
//   one to exercise the cutting), so MPI's int counts never overflow and the
//   staging buffers stay bounded (reduce_scatter and all_gather stage the
//   whole buffer: their block layout does not chunk).
// - Determinism: the same layout runs the same MPI algorithm on every call,
//   so results are bitwise reproducible from run to run.
// The MPI_Comm given to the constructor is duplicated (collective): our
// messages never mix with anyone else's, and the caller keeps its own
// handle. MPI errors on it are returned, not fatal, and become vit::Error
// with the rank in the message.
// Every call is watched by the collective watchdog (watchdog.h) while it is
// active: a peer that never arrives ends the job instead of hanging it.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "core/device.h"

namespace vit::comm {

class MpiCommunicator final : public Communicator {
 public:
  static constexpr size_t kDefaultChunkBytes = size_t{64} << 20;

  // Collective over comm. chunk_bytes: a multiple of 4, the same on every rank.
  explicit MpiCommunicator(MPI_Comm comm, size_t chunk_bytes = kDefaultChunkBytes);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }
  // The duplicated communicator, for code that needs raw MPI.
  MPI_Comm comm() const { return comm_; }
  // The members as ranks of MPI_COMM_WORLD, in this communicator's order.
  const std::vector<int>& world_ranks() const { return world_ranks_; }

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
  // Reductions on host memory, in place / into recv (count fits an int).
  void all_reduce_host(void* buf, size_t count, DType dtype, ReduceOp op);
  // In place when recv == send + rank*recv_count (send is then written).
  void reduce_scatter_host(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op);
  void* staging(size_t bytes);        // pinned host, grows on demand
  float* widened(size_t count);       // fp32 scratch for bf16/fp16 reductions
  void check_peer(int peer, const char* what) const;

  MPI_Comm comm_ = MPI_COMM_NULL;
  std::vector<int> world_ranks_;
  uint64_t seq_ = 0;  // operations started, for the watchdog's messages
  int rank_ = 0;
  int size_ = 1;
  size_t chunk_bytes_ = kDefaultChunkBytes;
  Buffer staging_;
  Buffer widened_;
};

}  // namespace vit::comm
