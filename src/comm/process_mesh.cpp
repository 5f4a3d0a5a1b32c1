// ProcessMesh (see process_mesh.h for the layout).
//
// Each group is one MPI_Comm_split of the world: the colour names the group
// (the coordinates its members share), the key is the coordinate that varies
// inside it, so group rank == tp_rank / pp_rank / dp_rank.
#include "comm/process_mesh.h"

#include <utility>

#include "core/error.h"

namespace vit::comm {

struct ProcessMesh::Groups {
  std::vector<std::unique_ptr<Communicator>> owned;
  Communicator* world = nullptr;
  Communicator* tp = nullptr;
  Communicator* pp = nullptr;
  Communicator* dp = nullptr;
};

ProcessMesh::ProcessMesh(int world_size, int rank, int tp, int pp)
    : world_size_(world_size), rank_(rank), tp_size_(tp), pp_size_(pp) {
  VIT_USER_CHECK(tp >= 1 && pp >= 1, "plugin.tp_size (", tp, ") and plugin.pp_size (", pp,
                 ") must be at least 1");
  VIT_USER_CHECK(world_size % (tp * pp) == 0, "plugin.tp_size x plugin.pp_size = ", tp, " x ", pp, " = ",
                 tp * pp, " does not divide the ", world_size,
                 " ranks: choose sizes whose product divides the number of ranks");
  VIT_CHECK(rank >= 0 && rank < world_size, "rank ", rank, " outside a world of ", world_size);
  dp_size_ = world_size / (tp * pp);
  tp_rank_ = rank % tp;
  pp_rank_ = (rank / tp) % pp;
  dp_rank_ = rank / (tp * pp);
}

ProcessMesh::ProcessMesh(MPI_Comm world, const WorldInfo& info, int tp, int pp, bool want_nccl)
    : ProcessMesh(
          [&] {
            int s = 1;
            MPI_Comm_size(world, &s);
            return s;
          }(),
          [&] {
            int r = 0;
            MPI_Comm_rank(world, &r);
            return r;
          }(),
          tp, pp) {
  auto g = std::make_unique<Groups>();
  g->owned.push_back(make_communicator(world, info, want_nccl));
  g->world = g->owned.back().get();
  // colour: the coordinates the members share; key: the one that varies.
  auto make_group = [&](int group_size, int colour, int key) -> Communicator* {
    MPI_Comm split = MPI_COMM_NULL;
    const int err = MPI_Comm_split(world, colour, key, &split);
    VIT_CHECK(err == MPI_SUCCESS, "MPI_Comm_split for the process mesh failed on rank ", rank_);
    // Every rank takes the same branch: group_size is the same everywhere.
    if (group_size == world_size_) {
      MPI_Comm_free(&split);
      return g->world;
    }
    std::unique_ptr<Communicator> c;
    try {
      c = make_communicator(split, info, want_nccl);
    } catch (...) {
      MPI_Comm_free(&split);
      throw;
    }
    MPI_Comm_free(&split);  // the communicator holds its own duplicate
    g->owned.push_back(std::move(c));
    return g->owned.back().get();
  };
  g->tp = make_group(tp_size_, dp_rank_ * pp_size_ + pp_rank_, tp_rank_);
  g->pp = make_group(pp_size_, dp_rank_ * tp_size_ + tp_rank_, pp_rank_);
  g->dp = make_group(dp_size_, pp_rank_ * tp_size_ + tp_rank_, dp_rank_);
  groups_ = std::move(g);
}

ProcessMesh::~ProcessMesh() = default;
ProcessMesh::ProcessMesh(ProcessMesh&&) noexcept = default;
ProcessMesh& ProcessMesh::operator=(ProcessMesh&&) noexcept = default;

int ProcessMesh::rank_of(int dp_rank, int pp_rank, int tp_rank) const {
  VIT_CHECK(dp_rank >= 0 && dp_rank < dp_size_ && pp_rank >= 0 && pp_rank < pp_size_ && tp_rank >= 0 &&
                tp_rank < tp_size_,
            "mesh coordinates (dp ", dp_rank, ", pp ", pp_rank, ", tp ", tp_rank, ") outside ", dp_size_, " x ",
            pp_size_, " x ", tp_size_);
  return (dp_rank * pp_size_ + pp_rank) * tp_size_ + tp_rank;
}

std::vector<int> ProcessMesh::tp_group() const {
  std::vector<int> ranks;
  for (int t = 0; t < tp_size_; ++t) ranks.push_back(rank_of(dp_rank_, pp_rank_, t));
  return ranks;
}

std::vector<int> ProcessMesh::pp_group() const {
  std::vector<int> ranks;
  for (int p = 0; p < pp_size_; ++p) ranks.push_back(rank_of(dp_rank_, p, tp_rank_));
  return ranks;
}

std::vector<int> ProcessMesh::dp_group() const {
  std::vector<int> ranks;
  for (int d = 0; d < dp_size_; ++d) ranks.push_back(rank_of(d, pp_rank_, tp_rank_));
  return ranks;
}

int ProcessMesh::pp_prev() const { return is_first_stage() ? -1 : rank_of(dp_rank_, pp_rank_ - 1, tp_rank_); }
int ProcessMesh::pp_next() const { return is_last_stage() ? -1 : rank_of(dp_rank_, pp_rank_ + 1, tp_rank_); }

ProcessMesh::Groups& ProcessMesh::groups() const {
  VIT_CHECK(groups_ != nullptr,
            "this ProcessMesh holds only the rank mapping: build it with the MPI_Comm constructor to get "
            "communicators");
  return *groups_;
}

Communicator& ProcessMesh::world_comm() const { return *groups().world; }
Communicator& ProcessMesh::tp_comm() const { return *groups().tp; }
Communicator& ProcessMesh::pp_comm() const { return *groups().pp; }
Communicator& ProcessMesh::dp_comm() const { return *groups().dp; }

}  // namespace vit::comm
