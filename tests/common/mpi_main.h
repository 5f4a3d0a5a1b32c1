// Include in one file of each multi-rank test executable, after defining
// BOOST_TEST_MODULE and including <boost/test/unit_test.hpp>.
//
// MPI_Init / MPI_Finalize around the whole suite. Each rank runs every test;
// mpirun exits non-zero when any rank fails, so ctest sees it. A check that
// fails on one rank must not leave the others in a collective: compute what
// the check needs with collectives first, then check.
#pragma once

#include <mpi.h>

struct VitMpiSession {
  VitMpiSession() { MPI_Init(nullptr, nullptr); }
  ~VitMpiSession() { MPI_Finalize(); }
};
BOOST_TEST_GLOBAL_FIXTURE(VitMpiSession);

inline int vit_mpi_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int vit_mpi_size() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}
