#include "io/rank_agreement.h"

#include <mpi.h>

#include <climits>

namespace vit::io {

int first_failing_rank(bool failed) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const int mine = failed ? rank : INT_MAX;
  int first = INT_MAX;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return first == INT_MAX ? -1 : first;
}

}  // namespace vit::io
