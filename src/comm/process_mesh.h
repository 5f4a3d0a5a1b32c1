// ProcessMesh: the one place that lays the ranks out as dp x pp x tp and
// builds every process group, once (Megatron's parallel_state). Plugins ask
// it for their tp/pp/dp rank and communicator; nobody else splits MPI_COMMs.
//
// Layout, tp fastest:  rank = (dp_rank * pp_size + pp_rank) * tp_size + tp_rank
// so the ranks of a tensor-parallel group are neighbours (the same node, the
// fastest links: TP talks in every layer), pipeline stages come next, and
// data-parallel replicas are furthest apart (they talk once per step).
//
//   world 8, tp 2, pp 2 (dp 2):  tp groups {0,1} {2,3} {4,5} {6,7}
//                                pp groups {0,2} {1,3} {4,6} {5,7}
//                                dp groups {0,4} {1,5} {2,6} {3,7}
//
// Two constructors: the mapping alone (plain integers, no MPI: what tests and
// validation need), and the mapping plus the communicators (collective over
// the world communicator). Each group's communicator comes from
// make_communicator (bootstrap.h) over an MPI_Comm_split of the world, so it
// is NCCL or MPI by the same rule as the world's. A group that spans the
// whole world shares the world's communicator instead of building another
// (one NCCL communicator fewer: NCCL buffers are not free).
// The mesh knows nothing of plugins or of the spec.
#pragma once

#include <mpi.h>

#include <memory>
#include <vector>

#include "comm/bootstrap.h"
#include "comm/communicator.h"

namespace vit::comm {

class ProcessMesh {
 public:
  // The mapping only. tp and pp must divide world_size (a UserError naming
  // plugin.tp_size / plugin.pp_size otherwise).
  ProcessMesh(int world_size, int rank, int tp, int pp);
  // The mapping and the world/tp/pp/dp communicators (collective over world).
  ProcessMesh(MPI_Comm world, const WorldInfo& info, int tp, int pp, bool want_nccl = true);
  ~ProcessMesh();
  ProcessMesh(ProcessMesh&&) noexcept;
  ProcessMesh& operator=(ProcessMesh&&) noexcept;

  int world_size() const { return world_size_; }
  int rank() const { return rank_; }
  int tp_size() const { return tp_size_; }
  int pp_size() const { return pp_size_; }
  int dp_size() const { return dp_size_; }
  int tp_rank() const { return tp_rank_; }
  int pp_rank() const { return pp_rank_; }
  int dp_rank() const { return dp_rank_; }

  // The world rank at these coordinates.
  int rank_of(int dp_rank, int pp_rank, int tp_rank) const;
  // World ranks of this rank's groups, in group-rank order (group rank i is
  // element i: the communicators number their ranks the same way).
  std::vector<int> tp_group() const;
  std::vector<int> pp_group() const;
  std::vector<int> dp_group() const;

  // Pipeline neighbours as WORLD ranks, -1 past either end (no wrap-around:
  // the first stage receives from nobody). Inside pp_comm() they are
  // pp_rank()-1 and pp_rank()+1.
  int pp_prev() const;
  int pp_next() const;
  bool is_first_stage() const { return pp_rank_ == 0; }
  bool is_last_stage() const { return pp_rank_ == pp_size_ - 1; }

  bool has_communicators() const { return groups_ != nullptr; }
  Communicator& world_comm() const;
  Communicator& tp_comm() const;
  Communicator& pp_comm() const;
  Communicator& dp_comm() const;

 private:
  struct Groups;
  Groups& groups() const;

  int world_size_ = 1, rank_ = 0;
  int tp_size_ = 1, pp_size_ = 1, dp_size_ = 1;
  int tp_rank_ = 0, pp_rank_ = 0, dp_rank_ = 0;
  std::unique_ptr<Groups> groups_;
};

}  // namespace vit::comm
