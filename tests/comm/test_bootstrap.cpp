// The bootstrap on CPU under mpirun (every rank on this one node): WorldInfo
// from MPI, the device choice and its errors, and make_communicator's pick.
#define BOOST_TEST_MODULE comm_bootstrap
#include <boost/test/unit_test.hpp>

#include <cstring>

#include "comm/bootstrap.h"
#include "common/mpi_main.h"
#include "core/error.h"

using namespace vit;
using namespace vit::comm;

BOOST_AUTO_TEST_CASE(world_info_on_one_node) {
  const WorldInfo info = query_world();
  BOOST_TEST(info.rank == vit_mpi_rank());
  BOOST_TEST(info.size == vit_mpi_size());
  // ctest starts every rank on this machine: one node, local == global.
  BOOST_TEST(info.nodes == 1);
  BOOST_TEST(info.local_rank == info.rank);
  BOOST_TEST(info.local_size == info.size);
  BOOST_TEST(!info.hostname.empty());
  // Every rank reports the same host name.
  char mine[MPI_MAX_PROCESSOR_NAME] = {};
  std::strncpy(mine, info.hostname.c_str(), sizeof(mine) - 1);
  char root[MPI_MAX_PROCESSOR_NAME] = {};
  std::memcpy(root, mine, sizeof(mine));
  MPI_Bcast(root, sizeof(root), MPI_CHAR, 0, MPI_COMM_WORLD);
  BOOST_TEST(std::string(root) == info.hostname);
}

BOOST_AUTO_TEST_CASE(mpi_session_leaves_an_initialised_mpi_alone) {
  // mpi_main.h already called MPI_Init: a session must neither re-init nor finalize.
  { vit::comm::MpiSession session(nullptr, nullptr); }
  int finalized = 1;
  MPI_Finalized(&finalized);
  BOOST_TEST(finalized == 0);
  int size = 0;
  BOOST_TEST(MPI_Comm_size(MPI_COMM_WORLD, &size) == MPI_SUCCESS);
  BOOST_TEST(size == vit_mpi_size());
}

BOOST_AUTO_TEST_CASE(device_choice) {
  WorldInfo info = query_world();
  choose_device(info, "cpu");
  BOOST_TEST(!info.use_gpu);
  BOOST_TEST(info.gpu_index == -1);
  BOOST_TEST(!info.gpus_shared);
  BOOST_TEST((info.device() == Device::CPU));

  choose_device(info, "auto");
  if (cuda_device_count() == 0) {
    BOOST_TEST(!info.use_gpu);  // no GPU here: auto means CPU
    BOOST_TEST(info.gpu_index == -1);
    BOOST_CHECK_THROW(choose_device(info, "cuda"), vit::UserError);  // on every rank alike
  } else {
    BOOST_TEST(info.use_gpu);
    BOOST_TEST(info.gpu_index == info.local_rank % cuda_device_count());
    BOOST_TEST(info.gpus_shared == (info.local_size > cuda_device_count()));
  }
  BOOST_CHECK_THROW(choose_device(info, "gpu"), vit::UserError);
  BOOST_TEST(!info.describe().empty());
}

BOOST_AUTO_TEST_CASE(make_communicator_on_cpu_is_mpi_over_the_given_ranks) {
  const WorldInfo info = bootstrap_world("cpu");
  auto world = make_communicator(MPI_COMM_WORLD, info);
  BOOST_TEST(std::string(world->backend()) == "mpi");
  BOOST_TEST(world->size() == info.size);
  BOOST_TEST(world->rank() == info.rank);
  // Over a sub-communicator (even / odd ranks) it numbers that group's ranks.
  MPI_Comm half;
  MPI_Comm_split(MPI_COMM_WORLD, info.rank % 2, info.rank, &half);
  auto sub = make_communicator(half, info);
  MPI_Comm_free(&half);  // the communicator keeps its own duplicate
  BOOST_TEST(sub->size() == (info.size + 1 - info.rank % 2) / 2);
  BOOST_TEST(sub->rank() == info.rank / 2);
  float v = 1.0f;
  sub->all_reduce(&v, 1, DType::F32, ReduceOp::Sum, Device::CPU);
  BOOST_TEST(v == static_cast<float>(sub->size()));
}
