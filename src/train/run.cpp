#include "train/run.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "comm/bootstrap.h"
#include "core/error.h"
#include "data/dataset.h"
#include "io/metrics.h"
#include "parallel/plugin.h"
#include "train/environment.h"
#include "train/resume.h"
#include "train/stop_signals.h"
#include "train/trainer.h"

namespace vit {

int run_experiment(const ExperimentSpec& spec, const std::string& spec_path) {
  (void)spec_path;
  // A stop request (SIGTERM, SIGINT, SIGUSR1) that arrives while the run
  // starts is kept for the first step boundary rather than killing the rank.
  if (!spec.benchmark.enabled) train::install_stop_signals();
  // Input the user controls is checked on every rank before any GPU work;
  // all ranks agree on the outcome, so a bad file fails the job cleanly.
  train::ResumePlan plan;
  const bool ok = train::all_ranks_ok([&] {
    const auto offered = parallel::available_plugins();
    if (std::find(offered.begin(), offered.end(), spec.plugin.name) == offered.end()) {
      std::string list;
      for (const auto& n : offered) list += (list.empty() ? "" : ", ") + n;
      throw UserError(str_cat(spec.origin.locate("plugin.name"), ": plugin.name: '", spec.plugin.name,
                              "' is not implemented yet (available: ", list, ")"));
    }
    if (!spec.benchmark.enabled) {
      data::Hdf5Dataset ds = data::Hdf5Dataset::open(spec.data.path);
      ds.check_matches(spec.model.image_size, spec.model.num_classes);
      ds.info().count(spec.data.train_split);
      if (spec.eval.enabled) ds.info().count(spec.data.eval_split);
    }
    io::make_dirs(spec.run.output_dir);
    // Never write over an earlier run's results, unless this run resumes it
    // from its own checkpoint (train/resume.h).
    if (spec.benchmark.enabled) {
      const std::string manifest = spec.run.output_dir + "/" + spec.run.name + "/manifest.json";
      VIT_USER_CHECK(::access(manifest.c_str(), F_OK) != 0, manifest, ": a run named '", spec.run.name,
                     "' already exists there; choose another run.name (--set run.name=...) or move that folder");
    } else {
      int rank = 0, size = 1;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      MPI_Comm_size(MPI_COMM_WORLD, &size);
      plan = train::plan_resume(spec, rank, size);
    }
  });
  if (!ok) return 2;

  // From here a failure on one rank ends every rank (MPI_Abort): others may be
  // inside a collective and would otherwise wait forever.
  std::unique_ptr<train::RunEnvironment> env;
  try {
    env = std::make_unique<train::RunEnvironment>(spec);
    return spec.benchmark.enabled ? train::benchmark(*env) : train::train(*env, plan);
  } catch (const std::exception& e) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::fprintf(stderr, "error on rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    if (env) {
      try {
        env->close_results(false, e.what());
      } catch (...) {
      }
    }
    comm::abort_all_ranks(1);
  }
}

}  // namespace vit
