// Bootstrap: from `mpirun` to a device and a communicator.
//
//   MpiSession mpi(&argc, &argv);                    // MPI_Init_thread / MPI_Finalize
//   WorldInfo world = query_world();                 // rank, size, node-local rank, nodes, host
//   choose_device(world, "auto");                    // cudaSetDevice(local_rank % GPUs) or CPU
//   auto comm = make_communicator(MPI_COMM_WORLD, world);   // NCCL, or MPI when GPUs are shared
//
// The node-local rank comes from MPI_Comm_split_type(MPI_COMM_TYPE_SHARED),
// so it is right under any launcher (mpirun, srun) without reading their
// environment variables.
//
// Sharing a GPU: NCCL refuses two ranks on one GPU ("duplicate GPU"), yet
// `mpirun -np 2` on a one-GPU machine must work and give the same result as
// on two GPUs. choose_device finds out, from the PCI bus ids of the GPUs the
// ranks of a node picked, whether any two ranks share one (per-rank
// CUDA_VISIBLE_DEVICES is handled: different ids, no sharing). It makes that
// a world-wide fact (every rank must pick the same backend), and global rank
// 0 prints ONE warning. make_communicator then returns the MPI communicator,
// which stages GPU data through pinned host memory.
//
// Every function here is collective over the communicator it takes, and
// fails on all ranks together (a rank that throws alone would leave the
// others waiting in the next collective).
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "comm/communicator.h"
#include "core/device.h"

namespace vit::comm {

// MPI_Init_thread(MPI_THREAD_FUNNELED) in the constructor (only the main
// thread calls MPI; loader threads never do) and MPI_Finalize in the
// destructor. If MPI is already initialised it does neither.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owns_ = false;
};

// For the entry point after an error on this rank: ends every rank
// (MPI_Abort on MPI_COMM_WORLD), so no rank stays blocked in a collective.
[[noreturn]] void abort_all_ranks(int exit_code);

struct WorldInfo {
  int rank = 0;
  int size = 1;
  int local_rank = 0;    // rank among the ranks of this node
  int local_size = 1;    // ranks on this node
  int nodes = 1;
  bool use_gpu = false;  // the same on every rank
  int gpu_index = -1;    // the CUDA device this rank uses, -1 on CPU
  int gpu_count = 0;     // GPUs this rank can see (0 in a CPU build)
  bool gpus_shared = false;  // some GPU, on some node, serves two ranks (the same on every rank)
  std::string hostname;

  Device device() const { return use_gpu ? Device::CUDA : Device::CPU; }
  // "4 ranks on 1 node, cuda (GPU 0, 2 ranks share a GPU)": for logs and the manifest.
  std::string describe() const;
};

// Ranks, node-local ranks, node count and host name; no device yet.
WorldInfo query_world(MPI_Comm comm = MPI_COMM_WORLD);

// requested: "auto" (a GPU when every rank sees one, otherwise the CPU),
// "cpu", or "cuda" (a UserError on every rank when some rank sees no GPU).
// On GPU: gpu_index = local_rank % gpu_count, cudaSetDevice(gpu_index), and
// gpus_shared as described above.
void choose_device(WorldInfo& info, const std::string& requested, MPI_Comm comm = MPI_COMM_WORLD);

// query_world + choose_device.
WorldInfo bootstrap_world(const std::string& requested_device, MPI_Comm comm = MPI_COMM_WORLD);

// The communicator for `comm`'s ranks: NCCL when want_nccl, the ranks use
// GPUs and no GPU is shared; MPI otherwise. `comm` is duplicated inside (the
// caller keeps and frees its own). Collective over comm.
std::unique_ptr<Communicator> make_communicator(MPI_Comm comm, const WorldInfo& info, bool want_nccl = true);

}  // namespace vit::comm
