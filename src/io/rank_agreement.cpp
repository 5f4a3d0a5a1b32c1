#include "io/rank_agreement.h"

#include <mpi.h>

#include <climits>
#include <cstdio>
#include <string>

namespace vit::io {

int first_failing_rank(bool failed) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const int mine = failed ? rank : INT_MAX;
  int first = INT_MAX;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return first == INT_MAX ? -1 : first;
}

void agree_or_throw(const std::function<void()>& check, const std::string& prefix, int exit_status) {
  std::string message;
  bool failed = false;
  try {
    check();
  } catch (const UserError& e) {
    message = e.what();
    failed = true;
  }
  const int first_failing = first_failing_rank(failed);
  if (first_failing < 0) return;
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (rank == first_failing) {
    // Rank 0's view is the usual one; another rank's problem says whose it is.
    const std::string whose = rank == 0 ? "" : "rank " + std::to_string(rank) + " of " + std::to_string(world) + ": ";
    std::fprintf(stderr, "%s%s%s\n", prefix.c_str(), whose.c_str(), message.c_str());
    std::fflush(stderr);
  }
  throw AgreedFailure(message, exit_status);
}

}  // namespace vit::io
