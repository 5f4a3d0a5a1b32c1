// Running an experiment once the spec is loaded and validated on every rank.
#pragma once

#include <string>

#include "io/spec.h"

namespace vit {

// Trains (or benchmarks, when spec.benchmark.enabled) as the spec says.
// Called on every rank after MPI_Init; returns the process exit code.
int run_experiment(const ExperimentSpec& spec, const std::string& spec_path);

}  // namespace vit
