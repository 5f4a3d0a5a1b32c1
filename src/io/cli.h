// The vit_hpc command line, as a function, so that src/main.cpp is a few
// lines and a test driver can run the very same code under mpirun.
//
//   vit_hpc [train] [SPEC] [--set section.field=value]... [--check]
//   vit_hpc --print-spec | --help
//
// --help and --print-spec print and return without MPI. Everything else
// initialises MPI (unless the caller already did), loads and validates the
// spec on every rank (no GPU is touched), and agrees across ranks before
// anything runs: when any rank finds a problem, the first such rank prints
// it and EVERY rank returns 2, so no rank waits in a collective for one that
// gave up. --check then prints the resolved spec on rank 0 and returns 0;
// otherwise `run` is called on every rank and its status returned.
//
// Exit status: 0 success, 2 bad command line or spec (every rank), else what
// `run` returns. An exception escaping `run` on any rank aborts all ranks
// (MPI_Abort) after printing it, since the other ranks may be inside a
// collective that will never complete.
//
// MPI is initialised with MPI_THREAD_MULTIPLE requested; `run` should ask
// MPI_Query_thread before calling MPI from more than one thread.
#pragma once

#include <functional>
#include <string>

#include "io/spec.h"

namespace vit {

// Trains (or benchmarks) the validated spec on this rank; returns the exit status.
using RunFn = std::function<int(const ExperimentSpec& spec, const std::string& spec_path)>;

int vit_cli_main(int argc, char** argv, const RunFn& run);

}  // namespace vit
