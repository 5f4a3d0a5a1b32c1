// The trainer's entry points, called by the vit_hpc command line
// (src/io/cli.cpp) on every rank once the spec is loaded and its layout
// validated for the world size. MPI is initialised (and finalised by the
// caller); no GPU has been touched yet.
#pragma once

#include <string>
#include <vector>

#include "io/spec.h"

namespace vit {

// Everything about the run that can be known without touching a GPU or
// writing anything, checked on every rank: the plugin is built, options not
// built yet are not set, the device exists and computes the precision, the
// data file opens, fits the model, has the splits, holds at least one global
// batch and (data.verify_checksum) matches its checksums, the pretrained
// checkpoint loads (shapes, finite values), the export destination can be
// written, the results folder is free. Throws vit::UserError naming the spec
// field (file:line) and what to do. Returns notes for the user (which of
// train.steps and train.epochs decides the length). The command line calls
// it for `--check` and before `run_experiment` alike (one validation path).
// Collective over MPI_COMM_WORLD (every rank must call it).
std::vector<std::string> preflight_experiment(const ExperimentSpec& spec);

// Runs the experiment `spec` (training, or the benchmark when
// spec.benchmark.enabled) on this rank after preflight_experiment passed on
// every rank; `spec_path` is the spec file as given on the command line (""
// when none was). First claims the run folder <output_dir>/<name> (created
// exclusively: of two runs started at once with one name, one gets it, the
// other stops with exit status 2 before writing anything). Returns the
// process exit status. Throws io::AgreedFailure when every rank stops
// together (message printed once), vit::Error on any other failure (the
// caller then aborts every rank).
int run_experiment(const ExperimentSpec& spec, const std::string& spec_path);

}  // namespace vit
