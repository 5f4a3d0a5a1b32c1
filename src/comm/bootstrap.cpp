// Bootstrap (see bootstrap.h). Every decision that must be the same on all
// ranks (GPU or CPU, NCCL or MPI, a failure) goes through an all-reduce
// before anyone acts on it.
#include "comm/bootstrap.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <vector>

#include "comm/gpu_runtime.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "core/error.h"

namespace vit::comm {
namespace {

void mpi_check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  VIT_THROW(call, " failed: ", std::string(text, len));
}

int all_min(int v, MPI_Comm comm) {
  int out = v;
  mpi_check(MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce(min)");
  return out;
}

int all_max(int v, MPI_Comm comm) {
  int out = v;
  mpi_check(MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_MAX, comm), "MPI_Allreduce(max)");
  return out;
}

// The ranks of this node, in a communicator the caller frees.
MPI_Comm split_node_local(MPI_Comm comm, int rank) {
  MPI_Comm local = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local),
            "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)");
  return local;
}

// How many ranks of this node use the same physical GPU as this rank.
int ranks_on_my_gpu(MPI_Comm comm, int rank, int gpu_index) {
  constexpr int kIdLen = 64;
  char mine[kIdLen] = {};
  const std::string id = gpu::pci_bus_id(gpu_index);
  std::strncpy(mine, id.c_str(), kIdLen - 1);
  MPI_Comm local = split_node_local(comm, rank);
  int local_size = 1;
  MPI_Comm_size(local, &local_size);
  std::vector<char> all(static_cast<size_t>(local_size) * kIdLen);
  const int err = MPI_Allgather(mine, kIdLen, MPI_CHAR, all.data(), kIdLen, MPI_CHAR, local);
  MPI_Comm_free(&local);
  mpi_check(err, "MPI_Allgather(GPU bus ids)");
  int same = 0;
  for (int r = 0; r < local_size; ++r) same += std::strncmp(mine, &all[static_cast<size_t>(r) * kIdLen], kIdLen) == 0;
  return same;
}

std::atomic<bool> g_shared_gpu_warned{false};

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  int provided = 0;
  mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  owns_ = true;
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_ && !finalized) MPI_Finalize();
}

void abort_all_ranks(int exit_code) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

std::string WorldInfo::describe() const {
  std::string s = str_cat(size, size == 1 ? " rank" : " ranks", " on ", nodes, nodes == 1 ? " node" : " nodes");
  if (!use_gpu) return s + ", cpu";
  return str_cat(s, ", cuda (GPU ", gpu_index, " of ", gpu_count, gpus_shared ? ", GPUs shared: MPI" : "", ")");
}

WorldInfo query_world(MPI_Comm comm) {
  WorldInfo info;
  mpi_check(MPI_Comm_rank(comm, &info.rank), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(comm, &info.size), "MPI_Comm_size");
  MPI_Comm local = split_node_local(comm, info.rank);
  MPI_Comm_rank(local, &info.local_rank);
  MPI_Comm_size(local, &info.local_size);
  MPI_Comm_free(&local);
  const int leader = info.local_rank == 0 ? 1 : 0;
  mpi_check(MPI_Allreduce(&leader, &info.nodes, 1, MPI_INT, MPI_SUM, comm), "MPI_Allreduce(nodes)");
  char name[MPI_MAX_PROCESSOR_NAME] = {};
  int len = 0;
  MPI_Get_processor_name(name, &len);
  info.hostname.assign(name, len);
  return info;
}

void choose_device(WorldInfo& info, const std::string& requested, MPI_Comm comm) {
  // The request comes from the spec, the same on every rank: all throw alike.
  VIT_USER_CHECK(requested == "auto" || requested == "cpu" || requested == "cuda", "device '", requested,
                 "' is not known: use auto, cpu or cuda");
  info.gpu_count = cuda_device_count();
  info.use_gpu = false;
  info.gpu_index = -1;
  info.gpus_shared = false;
  if (requested == "cpu") return;

  const bool sees_gpu = info.gpu_count > 0;
  const bool every_rank_sees_gpu = all_min(sees_gpu ? 1 : 0, comm) == 1;
  if (requested == "cuda" && !every_rank_sees_gpu) {
    if (!sees_gpu) {
      throw UserError(str_cat("device 'cuda' was requested but rank ", info.rank, " on host ", info.hostname,
                              " sees no GPU", built_with_cuda() ? "" : " (vit_hpc was built without CUDA)",
                              ": use device 'cpu' or 'auto'"));
    }
    throw UserError("device 'cuda' was requested but another rank sees no GPU: use device 'cpu' or 'auto'");
  }
  if (!every_rank_sees_gpu) return;  // auto: GPUs only when all have one

  info.use_gpu = true;
  info.gpu_index = info.local_rank % info.gpu_count;
  gpu::set_device(info.gpu_index);
  const int sharing = all_max(ranks_on_my_gpu(comm, info.rank, info.gpu_index), comm);
  info.gpus_shared = sharing > 1;
  if (info.gpus_shared && info.rank == 0 && !g_shared_gpu_warned.exchange(true)) {
    std::fprintf(stderr,
                 "vit_hpc: warning: up to %d ranks share one GPU (rank 0 on %s: %d ranks, %d GPUs visible). "
                 "NCCL refuses two ranks on one GPU, so collectives use MPI with GPU data staged through "
                 "host memory: the results are the same, communication is slower.\n",
                 sharing, info.hostname.c_str(), info.local_size, info.gpu_count);
    std::fflush(stderr);
  }
}

WorldInfo bootstrap_world(const std::string& requested_device, MPI_Comm comm) {
  WorldInfo info = query_world(comm);
  choose_device(info, requested_device, comm);
  return info;
}

std::unique_ptr<Communicator> make_communicator(MPI_Comm comm, const WorldInfo& info, bool want_nccl) {
  if (want_nccl && info.use_gpu && !info.gpus_shared) {
#ifdef VIT_WITH_CUDA
    return std::make_unique<NcclCommunicator>(comm);
#endif
  }
  return std::make_unique<MpiCommunicator>(comm);
}

}  // namespace vit::comm
