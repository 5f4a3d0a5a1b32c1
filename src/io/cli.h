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
// gave up. Then the `preflight` (when given) checks on every rank what the
// spec names (files, devices, destinations) and agrees the same way. ONE
// validation path: --check runs exactly these steps, so a spec that --check
// calls valid is refused later only by what cannot be known before the run
// (a GPU that fails, a disk that fills up). --check then prints the resolved
// spec on rank 0 and returns 0; otherwise `run` is called on every rank and
// its status returned. Notes the preflight returns are printed by rank 0.
//
// Exit status: 0 success, 2 bad command line, spec or input (every rank),
// else what `run` returns. An AgreedFailure (io/rank_agreement.h) escaping
// `run` ends every rank with its status, its message already printed once.
// Any other exception escaping `run` on any rank aborts all ranks
// (MPI_Abort) after printing it, since the other ranks may be inside a
// collective that will never complete.
//
// MPI is initialised with MPI_THREAD_MULTIPLE requested; `run` should ask
// MPI_Query_thread before calling MPI from more than one thread.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "io/spec.h"

namespace vit {

// Trains (or benchmarks) the validated spec on this rank; returns the exit status.
using RunFn = std::function<int(const ExperimentSpec& spec, const std::string& spec_path)>;

// Checks, on every rank, everything about the spec that can be known without
// touching a GPU or writing anything; throws vit::UserError naming the field
// and what to do. Returns notes for the user (printed once, by rank 0). It
// may use collectives before any check that can throw.
using PreflightFn = std::function<std::vector<std::string>(const ExperimentSpec& spec)>;

int vit_cli_main(int argc, char** argv, const RunFn& run);
int vit_cli_main(int argc, char** argv, const PreflightFn& preflight, const RunFn& run);

// For the single-process subcommands (`vit_hpc predict`, `vit_hpc export`):
// call inside a catch block; prints the exception in flight once, prefixed
// with `command` ("vit_hpc predict"), and returns the exit status: 2 for a
// command-line error (with a pointer to --help) or a vit::UserError, 1 for
// anything else.
int subcommand_failure(const char* command);

}  // namespace vit
