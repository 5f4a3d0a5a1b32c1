// ProcessMesh's communicators under mpirun: for EVERY layout the world size
// allows (tp x pp dividing it), each sub-communicator has the right size,
// numbers its ranks like the mesh, and holds exactly the mesh's members
// (checked by all-gathering world ranks over it). The pipeline communicator
// then carries a send/recv between neighbouring stages.
#define BOOST_TEST_MODULE comm_process_mesh_mpi
#include <boost/test/unit_test.hpp>

#include "comm/bootstrap.h"
#include "comm/process_mesh.h"
#include "common/mpi_main.h"

using namespace vit;
using namespace vit::comm;

namespace {

// World ranks of a communicator's members, in its rank order.
std::vector<int> members(Communicator& c, int world_rank) {
  const float mine = static_cast<float>(world_rank);  // small integers: exact in fp32
  std::vector<float> all(c.size());
  c.all_gather(&mine, all.data(), 1, DType::F32, Device::CPU);
  return std::vector<int>(all.begin(), all.end());
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_layout_builds_the_right_groups) {
  const WorldInfo info = bootstrap_world("cpu");
  const int world = info.size;
  for (int tp = 1; tp <= world; ++tp) {
    for (int pp = 1; pp <= world; ++pp) {
      if (world % (tp * pp) != 0) continue;
      BOOST_TEST_CONTEXT("world " << world << " tp " << tp << " pp " << pp) {
        ProcessMesh mesh(MPI_COMM_WORLD, info, tp, pp);
        BOOST_TEST(mesh.has_communicators());
        BOOST_TEST(mesh.world_comm().size() == world);
        BOOST_TEST(mesh.world_comm().rank() == info.rank);
        BOOST_TEST(mesh.tp_comm().size() == tp);
        BOOST_TEST(mesh.pp_comm().size() == pp);
        BOOST_TEST(mesh.dp_comm().size() == world / (tp * pp));
        BOOST_TEST(mesh.tp_comm().rank() == mesh.tp_rank());
        BOOST_TEST(mesh.pp_comm().rank() == mesh.pp_rank());
        BOOST_TEST(mesh.dp_comm().rank() == mesh.dp_rank());
        BOOST_TEST(std::string(mesh.tp_comm().backend()) == "mpi");  // CPU world
        BOOST_TEST(members(mesh.tp_comm(), info.rank) == mesh.tp_group());
        BOOST_TEST(members(mesh.pp_comm(), info.rank) == mesh.pp_group());
        BOOST_TEST(members(mesh.dp_comm(), info.rank) == mesh.dp_group());
        BOOST_TEST(members(mesh.world_comm(), info.rank) == [&] {
          std::vector<int> all(world);
          for (int r = 0; r < world; ++r) all[r] = r;
          return all;
        }());
        // A group spanning the world reuses the world's communicator.
        if (mesh.dp_size() == world) BOOST_TEST(&mesh.dp_comm() == &mesh.world_comm());

        // Pipeline: each stage sends its world rank forward; each receiver
        // must get the world rank that pp_prev() names.
        const int next = mesh.is_last_stage() ? -1 : mesh.pp_rank() + 1;
        const int prev = mesh.is_first_stage() ? -1 : mesh.pp_rank() - 1;
        float sent = static_cast<float>(info.rank), got = -1.0f;
        mesh.pp_comm().send_recv(&sent, 1, next, &got, 1, prev, DType::F32, Device::CPU);
        BOOST_TEST(static_cast<int>(got) == mesh.pp_prev());  // -1 stays -1 on the first stage
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(world_4_tp_2_members_spelled_out) {
  const WorldInfo info = bootstrap_world("cpu");
  if (info.size != 4) return;  // this case is about world 4; the one above covers every size
  ProcessMesh mesh(MPI_COMM_WORLD, info, 2, 1);
  const std::vector<int> tp_expected = info.rank < 2 ? std::vector<int>{0, 1} : std::vector<int>{2, 3};
  const std::vector<int> dp_expected = info.rank % 2 == 0 ? std::vector<int>{0, 2} : std::vector<int>{1, 3};
  BOOST_TEST(members(mesh.tp_comm(), info.rank) == tp_expected);
  BOOST_TEST(members(mesh.dp_comm(), info.rank) == dp_expected);
  BOOST_TEST(members(mesh.pp_comm(), info.rank) == std::vector<int>{info.rank});
  // A tp all-reduce sums exactly the two partners' values.
  float v = static_cast<float>(info.rank + 1);
  mesh.tp_comm().all_reduce(&v, 1, DType::F32, ReduceOp::Sum, Device::CPU);
  BOOST_TEST(v == (info.rank < 2 ? 3.0f : 7.0f));
}
