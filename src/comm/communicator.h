// The Communicator interface: the collectives every parallel plugin uses.
//
// Two implementations sit behind it:
//   - MpiCommunicator (mpi_communicator.h): MPI over host memory. GPU data is
//     staged through a pinned host buffer. It is what CPU runs use, and what
//     GPU runs use when several ranks share one GPU (NCCL refuses that).
//   - NcclCommunicator (nccl_communicator.h, CUDA builds only): NCCL on device
//     pointers, ordered on the caller's stream.
// Which one a rank gets is decided once, in bootstrap.h (make_communicator)
// and process_mesh.h (the tp/pp/dp sub-communicators); plugins only see this
// interface.
//
// Conventions shared by both (NCCL's, so that a plugin is written once):
//   - counts are in elements of `dtype`, never bytes;
//   - `device` says where the pointers live: Device::CUDA means device
//     pointers, Device::CPU host pointers;
//   - `stream` is a cudaStream_t passed as void* (nullptr: the legacy default
//     stream). NCCL enqueues on it and returns at once; the MPI version first
//     synchronises it (GPU data) and returns when the data is in place;
//   - reduce_scatter: `send` holds size()*recv_count elements, rank r gets the
//     reduction of block r. It may run in place with recv == send + rank*recv_count;
//   - all_gather: `recv` holds size()*send_count elements in rank order. It
//     may run in place with send == recv + rank*send_count;
//   - ReduceOp::Avg is the sum divided by size() (in fp32 on the MPI side).
// A communicator is used by one thread at a time (it keeps staging buffers).
#pragma once

#include <cstddef>

#include "core/device.h"
#include "core/dtype.h"

namespace vit::comm {

enum class ReduceOp { Sum, Avg, Max };
const char* reduce_op_name(ReduceOp op);  // "sum", "avg", "max"

class Communicator {
 public:
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  virtual ~Communicator();

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;  // "mpi" | "nccl"

  // In place: every rank ends with the reduction of everyone's buf.  // (count)
  virtual void all_reduce(void* buf, size_t count, DType dtype, ReduceOp op, Device device,
                          void* stream = nullptr) = 0;
  // send (size()*recv_count) -> recv (recv_count): block rank() of the reduction.
  virtual void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op,
                              Device device, void* stream = nullptr) = 0;
  // send (send_count) -> recv (size()*send_count), blocks in rank order.
  virtual void all_gather(const void* send, void* recv, size_t send_count, DType dtype, Device device,
                          void* stream = nullptr) = 0;
  // root's buf (count) -> every rank's buf.
  virtual void broadcast(void* buf, size_t count, DType dtype, int root, Device device,
                         void* stream = nullptr) = 0;
  // Point to point; every send needs the matching recv on `peer`.
  virtual void send(const void* buf, size_t count, DType dtype, int peer, Device device,
                    void* stream = nullptr) = 0;
  virtual void recv(void* buf, size_t count, DType dtype, int peer, Device device, void* stream = nullptr) = 0;
  // One send and one receive at the same time (a ring shift, a pipeline
  // stage sending forward while receiving backward) without the deadlock that
  // two blocking calls in the wrong order would give. A peer of -1 skips
  // that side.
  virtual void send_recv(const void* send_buf, size_t send_count, int send_peer, void* recv_buf,
                         size_t recv_count, int recv_peer, DType dtype, Device device,
                         void* stream = nullptr) = 0;
  // Host-side rendezvous of every rank; it does not wait for queued GPU work.
  virtual void barrier() = 0;
};

}  // namespace vit::comm
