// vit_spec_check_cli: the vit_hpc command line (src/io/cli.cpp) with a run
// function that only reports, so tests can drive the real CLI under mpirun
// before the trainer exists.
//
// The run function prints "would run <name> from <spec> on rank r of n" on
// every rank and returns 0. A run named "throw_on_rank_1" makes rank 1 throw
// while the other ranks wait in a barrier: the CLI must abort them all
// rather than leave them hanging.
#include <mpi.h>

#include <cstdio>
#include <string>

#include "core/error.h"
#include "io/cli.h"

int main(int argc, char** argv) {
  return vit::vit_cli_main(argc, argv, [](const vit::ExperimentSpec& spec, const std::string& spec_path) {
    int rank = 0, world = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (spec.run.name == "throw_on_rank_1") {
      if (rank == 1) VIT_THROW("deliberate failure on rank 1");
      MPI_Barrier(MPI_COMM_WORLD);  // never completes: rank 1 is gone
    }
    std::printf("would run %s from %s on rank %d of %d\n", spec.run.name.c_str(),
                spec_path.empty() ? "<defaults>" : spec_path.c_str(), rank, world);
    std::fflush(stdout);
    return 0;
  });
}
