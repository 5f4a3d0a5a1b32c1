// NcclCommunicator (see nccl_communicator.h). Compiled only in CUDA builds.
#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include "comm/gpu_runtime.h"
#include "comm/watchdog.h"
#include "core/error.h"

namespace vit::comm {
namespace {

// NCCL failures with the rank, NCCL's own last message and, for the usage
// error everyone meets first, what to do about it.
[[noreturn]] void nccl_fail(const char* file, int line, const char* call, ncclResult_t result, int rank,
                            ncclComm_t comm) {
  const char* detail = ncclGetLastError(comm);
  std::string hint;
  if (result == ncclInvalidUsage) {
    hint = " (if two ranks share one GPU, NCCL refuses it: let make_communicator pick MPI, "
           "or run at most one rank per GPU)";
  } else if (result == ncclSystemError || result == ncclRemoteError) {
    hint = " (NCCL_DEBUG=INFO shows which peer or transport failed)";
  }
  throw_error(file, line, str_cat(call, " failed on rank ", rank, ": ", ncclGetErrorString(result),
                                  detail && *detail ? str_cat(": ", detail) : std::string(), hint));
}

#define VIT_NCCL_CHECK(call)                                                 \
  do {                                                                       \
    const ncclResult_t vit_nccl_res_ = (call);                               \
    if (vit_nccl_res_ != ncclSuccess) {                                      \
      nccl_fail(__FILE__, __LINE__, #call, vit_nccl_res_, rank(), nccl_);    \
    }                                                                        \
  } while (0)

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return ncclFloat32;
    case DType::BF16: return ncclBfloat16;
    case DType::F16: return ncclFloat16;
    case DType::I32: return ncclInt32;
    case DType::U8: return ncclUint8;
  }
  VIT_THROW("no NCCL type for dtype ", static_cast<int>(dtype));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Avg: return ncclAvg;
    case ReduceOp::Max: return ncclMax;
  }
  VIT_THROW("no NCCL reduction for op ", static_cast<int>(op));
}

cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

}  // namespace

NcclCommunicator::NcclCommunicator(MPI_Comm comm) : host_(std::make_unique<MpiCommunicator>(comm)) {
  gpu_index_ = gpu::current_device();
  // The id travels with rank 0's result, so that a failure there makes every
  // rank throw instead of leaving the others waiting in ncclCommInitRank.
  struct {
    ncclResult_t result;
    ncclUniqueId id;
  } root{ncclSuccess, {}};
  if (host_->rank() == 0) root.result = ncclGetUniqueId(&root.id);
  const int err = MPI_Bcast(&root, sizeof(root), MPI_BYTE, 0, host_->comm());
  VIT_CHECK(err == MPI_SUCCESS, "broadcast of the NCCL unique id failed on rank ", host_->rank());
  if (root.result != ncclSuccess) {
    nccl_fail(__FILE__, __LINE__, "ncclGetUniqueId (on rank 0)", root.result, rank(), nullptr);
  }
  const ncclUniqueId& id = root.id;
  ncclComm_t created = nullptr;
  VIT_NCCL_CHECK(ncclCommInitRank(&created, host_->size(), id, host_->rank()));
  nccl_ = created;
  CollectiveWatchdog::get().register_nccl(nccl_, &host_->world_ranks());
}

NcclCommunicator::~NcclCommunicator() {
  // Destroy (not Finalize + Destroy): the destructor must not block on peers
  // that may already be unwinding after an error.
  if (nccl_ != nullptr) {
    CollectiveWatchdog::get().unregister_nccl(nccl_);
    ncclCommDestroy(nccl_);
  }
}

void NcclCommunicator::watch(const char* op, size_t count, DType dtype, void* stream) {
  CollectiveWatchdog::get().track_gpu(op, &host_->world_ranks(), ++seq_, count, dtype, stream, nccl_);
}

void NcclCommunicator::check_peer(int peer, const char* what) const {
  VIT_CHECK(peer >= 0 && peer < size(), what, ": peer ", peer, " is not a rank of this communicator (size ",
            size(), ", rank ", rank(), ")");
}

void NcclCommunicator::all_reduce(void* buf, size_t count, DType dtype, ReduceOp op, Device device,
                                  void* stream) {
  if (device == Device::CPU) return host_->all_reduce(buf, count, dtype, op, device, stream);
  if (count == 0) return;
  VIT_NCCL_CHECK(ncclAllReduce(buf, buf, count, nccl_type(dtype), nccl_op(op), nccl_, as_stream(stream)));
  watch("all_reduce", count, dtype, stream);
}

void NcclCommunicator::reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op,
                                      Device device, void* stream) {
  if (device == Device::CPU) return host_->reduce_scatter(send, recv, recv_count, dtype, op, device, stream);
  if (recv_count == 0) return;
  VIT_NCCL_CHECK(
      ncclReduceScatter(send, recv, recv_count, nccl_type(dtype), nccl_op(op), nccl_, as_stream(stream)));
  watch("reduce_scatter", recv_count, dtype, stream);
}

void NcclCommunicator::all_gather(const void* send, void* recv, size_t send_count, DType dtype, Device device,
                                  void* stream) {
  if (device == Device::CPU) return host_->all_gather(send, recv, send_count, dtype, device, stream);
  if (send_count == 0) return;
  VIT_NCCL_CHECK(ncclAllGather(send, recv, send_count, nccl_type(dtype), nccl_, as_stream(stream)));
  watch("all_gather", send_count, dtype, stream);
}

void NcclCommunicator::broadcast(void* buf, size_t count, DType dtype, int root, Device device, void* stream) {
  if (device == Device::CPU) return host_->broadcast(buf, count, dtype, root, device, stream);
  check_peer(root, "broadcast root");
  if (count == 0) return;
  VIT_NCCL_CHECK(ncclBroadcast(buf, buf, count, nccl_type(dtype), root, nccl_, as_stream(stream)));
  watch("broadcast", count, dtype, stream);
}

void NcclCommunicator::send(const void* buf, size_t count, DType dtype, int peer, Device device, void* stream) {
  if (device == Device::CPU) return host_->send(buf, count, dtype, peer, device, stream);
  check_peer(peer, "send");
  if (count == 0) return;
  VIT_NCCL_CHECK(ncclSend(buf, count, nccl_type(dtype), peer, nccl_, as_stream(stream)));
  watch("send", count, dtype, stream);
}

void NcclCommunicator::recv(void* buf, size_t count, DType dtype, int peer, Device device, void* stream) {
  if (device == Device::CPU) return host_->recv(buf, count, dtype, peer, device, stream);
  check_peer(peer, "recv");
  if (count == 0) return;
  VIT_NCCL_CHECK(ncclRecv(buf, count, nccl_type(dtype), peer, nccl_, as_stream(stream)));
  watch("recv", count, dtype, stream);
}

// One NCCL group: the send and the receive progress together, so a ring of
// send_recv calls cannot deadlock.
void NcclCommunicator::send_recv(const void* send_buf, size_t send_count, int send_peer, void* recv_buf,
                                 size_t recv_count, int recv_peer, DType dtype, Device device, void* stream) {
  if (device == Device::CPU) {
    return host_->send_recv(send_buf, send_count, send_peer, recv_buf, recv_count, recv_peer, dtype, device,
                            stream);
  }
  if (send_peer != -1) check_peer(send_peer, "send_recv (send side)");
  if (recv_peer != -1) check_peer(recv_peer, "send_recv (recv side)");
  const bool do_send = send_peer != -1 && send_count > 0;
  const bool do_recv = recv_peer != -1 && recv_count > 0;
  if (!do_send && !do_recv) return;
  VIT_NCCL_CHECK(ncclGroupStart());
  if (do_send) VIT_NCCL_CHECK(ncclSend(send_buf, send_count, nccl_type(dtype), send_peer, nccl_, as_stream(stream)));
  if (do_recv) VIT_NCCL_CHECK(ncclRecv(recv_buf, recv_count, nccl_type(dtype), recv_peer, nccl_, as_stream(stream)));
  VIT_NCCL_CHECK(ncclGroupEnd());
  watch("send_recv", do_send ? send_count : recv_count, dtype, stream);
}

void NcclCommunicator::barrier() { host_->barrier(); }

}  // namespace vit::comm
