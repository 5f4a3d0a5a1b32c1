// vit_hpc: the training program. The command line lives in src/io/cli.cpp
// (so tests run the same code); the experiment itself in src/train/.
// `vit_hpc predict ...` and `vit_hpc export ...` are single-process commands
// of their own.
#include <csignal>
#include <cstring>

#include "io/cli.h"
#include "kernels/blas_core.h"
#include "train/export_command.h"
#include "train/predict.h"
#include "train/run.h"

int main(int argc, char** argv) {
  // Before anything else (MPI included): OpenBLAS's kernels are chosen when
  // it loads; a generic choice on a CPU it did not recognise re-executes the
  // program with a better one (kernels/blas_core.h).
  vit::kernels::reexec_with_better_blas_core(argv);
  // A file-size limit (ulimit -f) makes a write fail with EFBIG, reported like
  // a full disk (and the trained model kept elsewhere), instead of SIGXFSZ
  // killing the process.
  std::signal(SIGXFSZ, SIG_IGN);
  if (argc > 1 && std::strcmp(argv[1], "predict") == 0) return vit::predict_main(argc - 1, argv + 1);
  if (argc > 1 && std::strcmp(argv[1], "export") == 0) return vit::export_main(argc - 1, argv + 1);
  return vit::vit_cli_main(argc, argv, vit::preflight_experiment, vit::run_experiment);
}
