// MpiCommunicator (see mpi_communicator.h for the rules it follows).
//
// Every GPU path has the same shape: synchronise the caller's stream, copy
// down into the pinned staging buffer, run the host collective there, copy
// back. The copies are core's synchronous copy_bytes, so when a call returns
// the result is in place, as the MPI semantics promise.
#include "comm/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "comm/gpu_runtime.h"
#include "comm/watchdog.h"
#include "core/error.h"

namespace vit::comm {
namespace {

constexpr int kTag = 7001;  // our duplicated communicator carries nothing else

[[noreturn]] void mpi_fail(const char* file, int line, const char* call, int code, int rank) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw_error(file, line, str_cat(call, " failed on rank ", rank, ": ", std::string(text, len)));
}

#define VIT_MPI_CHECK(call)                                          \
  do {                                                               \
    const int vit_mpi_err_ = (call);                                 \
    if (vit_mpi_err_ != MPI_SUCCESS) {                               \
      mpi_fail(__FILE__, __LINE__, #call, vit_mpi_err_, rank_);      \
    }                                                                \
  } while (0)

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::Max ? MPI_MAX : MPI_SUM; }

// MPI counts are ints; the chunked paths never exceed chunk_bytes_, the
// others must be checked.
int as_mpi_count(size_t n, const char* what) {
  VIT_CHECK(n <= static_cast<size_t>(INT_MAX), what, ": ", n, " elements exceed MPI's int count; split the call");
  return static_cast<int>(n);
}

// Data movement only: each element travels as an opaque unit of its size.
MPI_Datatype movement_type(DType dtype) {
  switch (dtype_size(dtype)) {
    case 4: return MPI_UINT32_T;
    case 2: return MPI_UINT16_T;
    default: return MPI_UINT8_T;
  }
}

void widen(const void* src, DType dtype, float* dst, size_t n) {
  VIT_CHECK(dtype == DType::BF16 || dtype == DType::F16, "reductions take fp32, bf16 or fp16, not ",
            dtype_name(dtype));
  if (dtype == DType::BF16) {
    const bf16_t* s = static_cast<const bf16_t*>(src);
    for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
  } else {
    const f16_t* s = static_cast<const f16_t*>(src);
    for (size_t i = 0; i < n; ++i) dst[i] = f16_to_float(s[i]);
  }
}

void narrow(const float* src, DType dtype, void* dst, size_t n) {
  VIT_CHECK(dtype == DType::BF16 || dtype == DType::F16, "reductions take fp32, bf16 or fp16, not ",
            dtype_name(dtype));
  if (dtype == DType::BF16) {
    bf16_t* d = static_cast<bf16_t*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
  } else {
    f16_t* d = static_cast<f16_t*>(dst);
    for (size_t i = 0; i < n; ++i) d[i] = float_to_f16(src[i]);
  }
}

// Avg = Sum / size, divided (not multiplied by 1/size) so that an average of
// equal values gives that value back exactly.
void divide(float* x, size_t n, int size) {
  const float d = static_cast<float>(size);
  for (size_t i = 0; i < n; ++i) x[i] = x[i] / d;
}

bool ranges_overlap(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const char* pa = static_cast<const char*>(a);
  const char* pb = static_cast<const char*>(b);
  return pa < pb + b_bytes && pb < pa + a_bytes;
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, size_t chunk_bytes) : chunk_bytes_(chunk_bytes) {
  VIT_CHECK(chunk_bytes >= 4 && chunk_bytes % 4 == 0 && chunk_bytes <= static_cast<size_t>(INT_MAX),
            "MpiCommunicator chunk of ", chunk_bytes, " bytes: must be a multiple of 4 below 2 GiB");
  int initialized = 0;
  MPI_Initialized(&initialized);
  VIT_CHECK(initialized, "MpiCommunicator needs MPI_Init first");
  VIT_MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  VIT_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  VIT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  VIT_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  MPI_Group mine = MPI_GROUP_NULL, world = MPI_GROUP_NULL;
  VIT_MPI_CHECK(MPI_Comm_group(comm_, &mine));
  VIT_MPI_CHECK(MPI_Comm_group(MPI_COMM_WORLD, &world));
  std::vector<int> local(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r) local[static_cast<size_t>(r)] = r;
  world_ranks_.resize(local.size());
  const int err = MPI_Group_translate_ranks(mine, size_, local.data(), world, world_ranks_.data());
  MPI_Group_free(&mine);
  MPI_Group_free(&world);
  VIT_MPI_CHECK(err);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

void* MpiCommunicator::staging(size_t bytes) {
  if (staging_.bytes() < bytes) {
    staging_.release();  // free first: never hold two staging buffers
    staging_ = Buffer(bytes, Device::CPU, HostMemory::Pinned);
  }
  return staging_.data();
}

float* MpiCommunicator::widened(size_t count) {
  if (widened_.bytes() < count * sizeof(float)) {
    widened_.release();
    widened_ = Buffer(count * sizeof(float), Device::CPU);
  }
  return widened_.as<float>();
}

void MpiCommunicator::check_peer(int peer, const char* what) const {
  VIT_CHECK(peer >= 0 && peer < size_, what, ": peer ", peer, " is not a rank of this communicator (size ",
            size_, ", rank ", rank_, ")");
}

// ---------------------------------------------------------------------------
// all_reduce
// ---------------------------------------------------------------------------

void MpiCommunicator::all_reduce_host(void* buf, size_t count, DType dtype, ReduceOp op) {
  const int n = as_mpi_count(count, "all_reduce");
  if (dtype == DType::F32) {
    float* x = static_cast<float*>(buf);
    VIT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_FLOAT, mpi_op(op), comm_));
    if (op == ReduceOp::Avg) divide(x, count, size_);
    return;
  }
  float* w = widened(count);
  widen(buf, dtype, w, count);
  VIT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, w, n, MPI_FLOAT, mpi_op(op), comm_));
  if (op == ReduceOp::Avg) divide(w, count, size_);
  narrow(w, dtype, buf, count);
}

void MpiCommunicator::all_reduce(void* buf, size_t count, DType dtype, ReduceOp op, Device device,
                                 void* stream) {
  const auto watched = CollectiveWatchdog::get().watch("all_reduce", &world_ranks_, ++seq_, count, dtype);
  if (count == 0) return;
  const size_t es = dtype_size(dtype);
  // Chunks of chunk_bytes_ of fp32: bounds both the staging and the widened
  // scratch, whatever the dtype.
  const size_t chunk = chunk_bytes_ / sizeof(float);
  if (device == Device::CUDA) gpu::synchronize_stream(stream);
  char* base = static_cast<char*>(buf);
  for (size_t off = 0; off < count; off += chunk) {
    const size_t n = std::min(chunk, count - off);
    void* part = base + off * es;
    if (device == Device::CUDA) {
      void* host = staging(n * es);
      copy_bytes(host, Device::CPU, part, Device::CUDA, n * es);
      all_reduce_host(host, n, dtype, op);
      copy_bytes(part, Device::CUDA, host, Device::CPU, n * es);
    } else {
      all_reduce_host(part, n, dtype, op);
    }
  }
}

// ---------------------------------------------------------------------------
// reduce_scatter
// ---------------------------------------------------------------------------

// MPI_IN_PLACE for Reduce_scatter_block reads the whole input from the
// receive buffer and leaves the result in its FIRST block; NCCL's in-place
// form (recv == send + rank*recv_count) wants it in block `rank`. Both are
// served here: in place, reduce over `send` and move block 0 to block rank.
void MpiCommunicator::reduce_scatter_host(const void* send, void* recv, size_t recv_count, DType dtype,
                                          ReduceOp op) {
  const size_t es = dtype_size(dtype);
  const size_t total = recv_count * static_cast<size_t>(size_);
  const int n = as_mpi_count(recv_count, "reduce_scatter");
  const bool in_place = recv == static_cast<const char*>(send) + rank_ * recv_count * es;
  VIT_CHECK(in_place || !ranges_overlap(send, total * es, recv, recv_count * es),
            "reduce_scatter: recv overlaps send other than as block rank (", rank_, ") of it");
  if (dtype == DType::F32) {
    if (in_place) {
      float* all = static_cast<float*>(const_cast<void*>(send));  // recv lies inside it: writable
      VIT_MPI_CHECK(MPI_Reduce_scatter_block(MPI_IN_PLACE, all, n, MPI_FLOAT, mpi_op(op), comm_));
      if (rank_ != 0) std::memcpy(recv, all, recv_count * es);  // block 0 and block rank are disjoint
    } else {
      VIT_MPI_CHECK(MPI_Reduce_scatter_block(send, recv, n, MPI_FLOAT, mpi_op(op), comm_));
    }
    if (op == ReduceOp::Avg) divide(static_cast<float*>(recv), recv_count, size_);
    return;
  }
  float* w = widened(total);  // (size*recv_count) fp32
  widen(send, dtype, w, total);
  VIT_MPI_CHECK(MPI_Reduce_scatter_block(MPI_IN_PLACE, w, n, MPI_FLOAT, mpi_op(op), comm_));
  if (op == ReduceOp::Avg) divide(w, recv_count, size_);
  narrow(w, dtype, recv, recv_count);
}

void MpiCommunicator::reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op,
                                     Device device, void* stream) {
  const auto watched = CollectiveWatchdog::get().watch("reduce_scatter", &world_ranks_, ++seq_, recv_count, dtype);
  if (recv_count == 0) return;
  if (device == Device::CUDA) {
    const size_t es = dtype_size(dtype);
    const size_t total_bytes = recv_count * static_cast<size_t>(size_) * es;
    gpu::synchronize_stream(stream);
    char* host = static_cast<char*>(staging(total_bytes));
    copy_bytes(host, Device::CPU, send, Device::CUDA, total_bytes);
    char* host_block = host + rank_ * recv_count * es;
    reduce_scatter_host(host, host_block, recv_count, dtype, op);
    copy_bytes(recv, Device::CUDA, host_block, Device::CPU, recv_count * es);
    return;
  }
  reduce_scatter_host(send, recv, recv_count, dtype, op);
}

// ---------------------------------------------------------------------------
// all_gather (a pure data movement: 16-bit types travel as uint16, bitwise)
// ---------------------------------------------------------------------------

void MpiCommunicator::all_gather(const void* send, void* recv, size_t send_count, DType dtype, Device device,
                                 void* stream) {
  const auto watched = CollectiveWatchdog::get().watch("all_gather", &world_ranks_, ++seq_, send_count, dtype);
  if (send_count == 0) return;
  const size_t es = dtype_size(dtype);
  const MPI_Datatype type = movement_type(dtype);
  const int n = as_mpi_count(send_count, "all_gather");
  const size_t total_bytes = send_count * static_cast<size_t>(size_) * es;
  const size_t own_offset = rank_ * send_count * es;
  if (device == Device::CUDA) {
    gpu::synchronize_stream(stream);
    char* host = static_cast<char*>(staging(total_bytes));
    copy_bytes(host + own_offset, Device::CPU, send, Device::CUDA, send_count * es);
    VIT_MPI_CHECK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, host, n, type, comm_));
    copy_bytes(recv, Device::CUDA, host, Device::CPU, total_bytes);
    return;
  }
  const bool in_place = send == static_cast<const char*>(recv) + own_offset;
  VIT_CHECK(in_place || !ranges_overlap(send, send_count * es, recv, total_bytes),
            "all_gather: send overlaps recv other than as block rank (", rank_, ") of it");
  if (in_place) {
    VIT_MPI_CHECK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, n, type, comm_));
  } else {
    VIT_MPI_CHECK(MPI_Allgather(send, n, type, recv, n, type, comm_));
  }
}

// ---------------------------------------------------------------------------
// broadcast and point to point (bytes, in chunks of chunk_bytes_)
// ---------------------------------------------------------------------------

void MpiCommunicator::broadcast(void* buf, size_t count, DType dtype, int root, Device device, void* stream) {
  const auto watched = CollectiveWatchdog::get().watch("broadcast", &world_ranks_, ++seq_, count, dtype);
  check_peer(root, "broadcast root");
  const size_t bytes = count * dtype_size(dtype);
  if (bytes == 0) return;
  if (device == Device::CUDA) gpu::synchronize_stream(stream);
  char* base = static_cast<char*>(buf);
  for (size_t off = 0; off < bytes; off += chunk_bytes_) {
    const size_t n = std::min(chunk_bytes_, bytes - off);
    if (device == Device::CUDA) {
      void* host = staging(n);
      if (rank_ == root) copy_bytes(host, Device::CPU, base + off, Device::CUDA, n);
      VIT_MPI_CHECK(MPI_Bcast(host, static_cast<int>(n), MPI_BYTE, root, comm_));
      if (rank_ != root) copy_bytes(base + off, Device::CUDA, host, Device::CPU, n);
    } else {
      VIT_MPI_CHECK(MPI_Bcast(base + off, static_cast<int>(n), MPI_BYTE, root, comm_));
    }
  }
}

void MpiCommunicator::send(const void* buf, size_t count, DType dtype, int peer, Device device, void* stream) {
  const auto watched = CollectiveWatchdog::get().watch("send", &world_ranks_, ++seq_, count, dtype);
  check_peer(peer, "send");
  VIT_CHECK(peer != rank_, "send: rank ", rank_, " sends to itself; use send_recv for a self-exchange");
  const size_t bytes = count * dtype_size(dtype);
  if (bytes == 0) return;
  if (device == Device::CUDA) gpu::synchronize_stream(stream);
  const char* base = static_cast<const char*>(buf);
  for (size_t off = 0; off < bytes; off += chunk_bytes_) {
    const size_t n = std::min(chunk_bytes_, bytes - off);
    const void* part = base + off;
    if (device == Device::CUDA) {
      void* host = staging(n);
      copy_bytes(host, Device::CPU, part, Device::CUDA, n);
      part = host;
    }
    VIT_MPI_CHECK(MPI_Send(part, static_cast<int>(n), MPI_BYTE, peer, kTag, comm_));
  }
}

void MpiCommunicator::recv(void* buf, size_t count, DType dtype, int peer, Device device, void* stream) {
  const auto watched = CollectiveWatchdog::get().watch("recv", &world_ranks_, ++seq_, count, dtype);
  check_peer(peer, "recv");
  VIT_CHECK(peer != rank_, "recv: rank ", rank_, " receives from itself; use send_recv for a self-exchange");
  const size_t bytes = count * dtype_size(dtype);
  if (bytes == 0) return;
  if (device == Device::CUDA) gpu::synchronize_stream(stream);  // buf may still be read by queued work
  char* base = static_cast<char*>(buf);
  for (size_t off = 0; off < bytes; off += chunk_bytes_) {
    const size_t n = std::min(chunk_bytes_, bytes - off);
    void* part = device == Device::CUDA ? staging(n) : base + off;
    MPI_Status status;
    VIT_MPI_CHECK(MPI_Recv(part, static_cast<int>(n), MPI_BYTE, peer, kTag, comm_, &status));
    int got = 0;
    MPI_Get_count(&status, MPI_BYTE, &got);
    VIT_CHECK(static_cast<size_t>(got) == n, "recv: rank ", rank_, " expected ", n, " bytes from rank ", peer,
              " and got ", got, " (the send and recv counts differ)");
    if (device == Device::CUDA) copy_bytes(base + off, Device::CUDA, part, Device::CPU, n);
  }
}

// Both sides cut their buffers into the same chunk_bytes_ chunks, so chunk i
// of a send always meets chunk i of the matching receive. Once one side has
// no chunk left it talks to MPI_PROC_NULL, which sends and receives nothing.
void MpiCommunicator::send_recv(const void* send_buf, size_t send_count, int send_peer, void* recv_buf,
                                size_t recv_count, int recv_peer, DType dtype, Device device, void* stream) {
  const auto watched = CollectiveWatchdog::get().watch("send_recv", &world_ranks_, ++seq_, send_count, dtype);
  if (send_peer != -1) check_peer(send_peer, "send_recv (send side)");
  if (recv_peer != -1) check_peer(recv_peer, "send_recv (recv side)");
  const size_t es = dtype_size(dtype);
  const size_t send_bytes = send_peer == -1 ? 0 : send_count * es;
  const size_t recv_bytes = recv_peer == -1 ? 0 : recv_count * es;
  if (send_bytes == 0 && recv_bytes == 0) return;
  if (device == Device::CUDA) gpu::synchronize_stream(stream);
  const size_t send_chunks = (send_bytes + chunk_bytes_ - 1) / chunk_bytes_;
  const size_t recv_chunks = (recv_bytes + chunk_bytes_ - 1) / chunk_bytes_;
  char* host_send = nullptr;
  char* host_recv = nullptr;
  if (device == Device::CUDA) {
    const size_t send_cap = std::min(send_bytes, chunk_bytes_);
    host_send = static_cast<char*>(staging(send_cap + std::min(recv_bytes, chunk_bytes_)));
    host_recv = host_send + send_cap;
  }
  const char* sbase = static_cast<const char*>(send_buf);
  char* rbase = static_cast<char*>(recv_buf);
  for (size_t i = 0; i < std::max(send_chunks, recv_chunks); ++i) {
    const size_t soff = i * chunk_bytes_, roff = i * chunk_bytes_;
    const size_t sn = i < send_chunks ? std::min(chunk_bytes_, send_bytes - soff) : 0;
    const size_t rn = i < recv_chunks ? std::min(chunk_bytes_, recv_bytes - roff) : 0;
    const int dest = i < send_chunks ? send_peer : MPI_PROC_NULL;
    const int source = i < recv_chunks ? recv_peer : MPI_PROC_NULL;
    const void* spart = sn ? sbase + soff : nullptr;
    void* rpart = rn ? rbase + roff : nullptr;
    if (device == Device::CUDA) {
      if (sn) copy_bytes(host_send, Device::CPU, spart, Device::CUDA, sn);
      spart = host_send;
      rpart = host_recv;
    }
    MPI_Status status;
    VIT_MPI_CHECK(MPI_Sendrecv(spart, static_cast<int>(sn), MPI_BYTE, dest, kTag, rpart, static_cast<int>(rn),
                               MPI_BYTE, source, kTag, comm_, &status));
    if (source != MPI_PROC_NULL) {
      int got = 0;
      MPI_Get_count(&status, MPI_BYTE, &got);
      VIT_CHECK(static_cast<size_t>(got) == rn, "send_recv: rank ", rank_, " expected ", rn, " bytes from rank ",
                recv_peer, " and got ", got, " (the send and recv counts differ)");
      if (device == Device::CUDA) copy_bytes(rbase + roff, Device::CUDA, host_recv, Device::CPU, rn);
    }
  }
}

void MpiCommunicator::barrier() {
  const auto watched = CollectiveWatchdog::get().watch("barrier", &world_ranks_, ++seq_, 0, DType::U8);
  VIT_MPI_CHECK(MPI_Barrier(comm_));
}

}  // namespace vit::comm
