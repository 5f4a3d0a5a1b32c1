// The trainer's entry point, called by the vit_hpc command line
// (src/io/cli.cpp) on every rank once the spec is loaded and its layout
// validated for the world size. MPI is initialised (and finalised by the
// caller); no GPU has been touched yet.
#pragma once

#include <string>

#include "io/spec.h"

namespace vit {

// Runs the experiment `spec` (training, or the benchmark when
// spec.benchmark.enabled) on this rank; `spec_path` is the spec file as
// given on the command line ("" when none was). Returns the process exit
// status. Throws vit::Error on failure; the caller then aborts every rank.
int run_experiment(const ExperimentSpec& spec, const std::string& spec_path);

}  // namespace vit
