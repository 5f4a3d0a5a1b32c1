#include "train/run.h"

#include <mpi.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "comm/bootstrap.h"
#include "core/device.h"
#include "core/error.h"
#include "data/dataset.h"
#include "data/sampler.h"
#include "io/metrics.h"
#include "kernels/gemm_tuning_cache.h"
#include "io/rank_agreement.h"
#include "parallel/plugin.h"
#include "train/environment.h"
#include "train/hf_checkpoint.h"
#include "train/resume.h"
#include "train/stop_signals.h"
#include "train/trainer.h"
#include "train/trainer.h"

namespace vit {

namespace {

// "<file:line>: <field>: " for a message about a spec field.
std::string at(const ExperimentSpec& spec, const char* field) {
  return str_cat(spec.origin.locate(field), ": ", field, ": ");
}

// Runs `check`; a UserError it throws gets `prefix` in front (and `suffix` after).
template <typename F>
auto about(const std::string& prefix, F&& check, const std::string& suffix = "") {
  try {
    return check();
  } catch (const UserError& e) {
    throw UserError(prefix + e.what() + suffix);
  }
}

std::string run_folder(const ExperimentSpec& spec) { return spec.run.output_dir + "/" + spec.run.name; }

// What the preflight decided about resuming (train/resume.h), for the run
// that follows it in the same process (--check stops after the preflight).
train::ResumePlan& resume_plan() {
  static train::ResumePlan plan;
  return plan;
}

// The results folder can be made and the run's own folder is free (nothing
// is created here: --check runs this too).
void check_results_folder(const ExperimentSpec& spec) {
  const std::string dir = run_folder(spec);
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    throw UserError(str_cat(at(spec, "run.name"), dir, " already exists (an earlier run, or one running now, named '",
                            spec.run.name, "'); choose another run.name (--set run.name=...) or move that folder"));
  }
  // The nearest folder that exists must take new entries.
  std::string existing = spec.run.output_dir.empty() ? "." : spec.run.output_dir;
  while (::stat(existing.c_str(), &st) != 0) {
    const size_t slash = existing.find_last_of('/');
    existing = slash == std::string::npos ? "." : slash == 0 ? "/" : existing.substr(0, slash);
  }
  if (!S_ISDIR(st.st_mode)) {
    throw UserError(str_cat(at(spec, "run.output_dir"), existing, " is a file, not a folder"));
  }
  if (::access(existing.c_str(), W_OK) != 0) {
    throw UserError(str_cat(at(spec, "run.output_dir"), "cannot create ", dir, ": ", existing, " is not writable (",
                            std::strerror(errno), ")"));
  }
}

std::string count_of(int64_t n, const char* one, const char* many) { return str_cat(n, " ", n == 1 ? one : many); }

// Which of train.steps and train.epochs decides the length (the schema: steps,
// when > 0), said when both are set.
std::string length_note(const ExperimentSpec& spec, int64_t steps_per_epoch, int64_t global_batch) {
  const auto& t = spec.train;
  if (t.steps <= 0 || !spec.origin.where.count("train.epochs")) return "";
  const int64_t by_epochs = steps_per_epoch * t.epochs;
  const int64_t epochs_run = (t.steps + steps_per_epoch - 1) / steps_per_epoch;
  const std::string head = str_cat("train.steps ", t.steps, " wins over train.epochs ", t.epochs, " (",
                                   spec.origin.locate("train.epochs"), "): with ",
                                   count_of(steps_per_epoch, "step", "steps"), " of ", global_batch,
                                   " images per epoch, ");
  if (t.steps > by_epochs) {
    return head + str_cat("the run takes ", count_of(epochs_run, "epoch", "epochs"), ", more than train.epochs ",
                          t.epochs, " (", count_of(by_epochs, "step", "steps"),
                          "); set train.steps: 0 to train by epochs");
  }
  if (t.steps < by_epochs) {
    return head + str_cat("the run stops after ", count_of(t.steps, "step", "steps"), ", in epoch ", epochs_run,
                          " of ", t.epochs);
  }
  return head + str_cat("both give ", count_of(t.steps, "step", "steps"));
}

}  // namespace

std::vector<std::string> preflight_experiment(const ExperimentSpec& spec) {
  std::vector<std::string> notes;
  // Collectives first: below, any rank may throw on its own.
  const comm::WorldInfo world = comm::query_world();  // node-local ranks share the checksum reading
  const int mine_sees_gpu = cuda_device_count() > 0 ? 1 : 0;
  int every_rank_sees_gpu = 0;
  MPI_Allreduce(&mine_sees_gpu, &every_rank_sees_gpu, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);

  const auto offered = parallel::available_plugins();
  if (std::find(offered.begin(), offered.end(), spec.plugin.name) == offered.end()) {
    std::string list;
    for (const auto& n : offered) list += (list.empty() ? "" : ", ") + n;
    throw UserError(str_cat(at(spec, "plugin.name"), "'", spec.plugin.name, "' is not implemented yet (available: ",
                            list, ")"));
  }
  // Recipe options the plugin does not carry (mixup, drop path, EMA, ...).
  train::check_recipe_support(spec);

  // The device, and what it computes.
  if (spec.run.device == "cuda" && !mine_sees_gpu) {
    throw UserError(str_cat(at(spec, "run.device"), "cuda, but rank ", world.rank, " on host ", world.hostname,
                            " sees no GPU", built_with_cuda() ? "" : " (this vit_hpc was built without CUDA)",
                            " (allowed here: cpu, or auto)"));
  }
  const bool on_gpu = spec.run.device == "cuda" || (spec.run.device == "auto" && every_rank_sees_gpu);
  if (!on_gpu && spec.plugin.precision != "fp32") {
    throw UserError(str_cat(at(spec, "plugin.precision"), spec.plugin.precision,
                            " needs a GPU, but this run computes on the CPU (run.device ", spec.run.device,
                            spec.run.device == "auto" ? " and no GPU visible on every rank" : "",
                            ") (allowed on the CPU: fp32, with plugin.name torch_ddp)"));
  }

  // The GEMM tuning cache: a file that reads (when it exists) in a folder
  // that exists (the run writes it there; "auto" is in run.output_dir, which
  // the run makes).
  const std::string tuning_cache = train::gemm_tuning_cache_path(spec);
  if (spec.plugin.gemm_autotune && !tuning_cache.empty() && (on_gpu || spec.plugin.gemm_tuning_cache != "auto")) {
    const std::string& path = tuning_cache;
    const size_t slash = path.find_last_of('/');
    const std::string folder = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    struct stat st {};
    if (spec.plugin.gemm_tuning_cache != "auto" && (::stat(folder.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))) {
      throw UserError(str_cat(at(spec, "plugin.gemm_tuning_cache"), path, ": the folder ", folder,
                              " does not exist (create it, or name a file in a folder that exists; empty = no cache)"));
    }
    about(at(spec, "plugin.gemm_tuning_cache"), [&] { GemmTuningCache cache(path); });
  }

  // The data, apart from its checksum (read last: it is the slow part).
  data::Hdf5Dataset ds;
  const int model_ranks = spec.plugin.tp_size * spec.plugin.pp_size;
  const int dp = std::max(1, world.size / model_ranks);
  if (!spec.benchmark.enabled) {
    const std::string where = at(spec, "data.path");
    ds = about(where, [&] {
      data::Hdf5Dataset d = data::Hdf5Dataset::open(spec.data.path, spec.model.image_size);
      d.check_matches(spec.model.image_size, spec.model.num_classes);
      d.info().count(spec.data.train_split);
      if (spec.eval.enabled) d.info().count(spec.data.eval_split);
      return d;
    });
    data::SamplerOptions so;
    so.dataset_size = ds.size(spec.data.train_split);
    so.batch_per_rank = static_cast<int64_t>(spec.train.batch_size) * spec.train.grad_accum;
    so.dp_size = dp;
    so.drop_last = spec.data.drop_last;
    const data::DistributedSampler sampler(so);
    if (sampler.steps_per_epoch() == 0) {
      throw UserError(str_cat(
          at(spec, "train.batch_size"), spec.train.batch_size, " x train.grad_accum ", spec.train.grad_accum, " x ",
          dp, " data-parallel ", dp == 1 ? "rank" : "ranks", " = a global batch of ", sampler.global_batch(),
          " images, but split '", spec.data.train_split, "' of ", spec.data.path, " holds ", so.dataset_size,
          spec.data.drop_last ? " and data.drop_last drops an incomplete batch, so no step would run" : "",
          " (allowed: a global batch of at most ", so.dataset_size, "; lower train.batch_size",
          spec.data.drop_last ? " or set data.drop_last: false" : "", ")"));
    }
    const std::string note = length_note(spec, sampler.steps_per_epoch(), sampler.global_batch());
    if (!note.empty()) notes.push_back(note);
  }

  // Weights to start from: readable, shaped as this model needs, finite.
  if (!spec.model.pretrained.empty()) {
    about(at(spec, "model.pretrained"), [&] {
      train::load_hf_vit(spec.model.pretrained, train::model_config(spec), static_cast<uint64_t>(spec.run.seed));
    });
  }
  // Where the trained model goes: found unusable now, not after training.
  if (!spec.checkpoint.export_hf.empty() && !spec.benchmark.enabled) {
    about(at(spec, "checkpoint.export_hf"),
          [&] { train::check_export_destination(spec.checkpoint.export_hf, spec.checkpoint.overwrite_export); });
  }
  // Start afresh or resume (train/resume.h): a run folder that exists is
  // continued only by a resume of that same run.
  resume_plan() = train::ResumePlan();
  if (!spec.benchmark.enabled) {
    resume_plan() = train::plan_resume(spec, world.rank, world.size);
    if (!resume_plan().note.empty()) notes.push_back(resume_plan().note);
  }
  if (!resume_plan().same_run_folder) check_results_folder(spec);

  if (!spec.benchmark.enabled && spec.data.verify_checksum) {
    about(at(spec, "data.path"), [&] { ds.verify_checksum(world.local_rank, world.local_size); },
          " (data.verify_checksum: false skips this check)");
  }
  return notes;
}

int run_experiment(const ExperimentSpec& spec, const std::string& spec_path) {
  (void)spec_path;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::string dir = run_folder(spec);
  const train::ResumePlan plan = resume_plan();
  // A stop request (SIGTERM, SIGINT, SIGUSR1) that arrives from here on is
  // kept for the next step boundary rather than killing the rank.
  if (!spec.benchmark.enabled) train::install_stop_signals();
  // Claim the run folder: mkdir is atomic, so of two runs started at once
  // with one name exactly one gets it, before either writes a byte there.
  // A resume of this same run continues its existing folder.
  io::agree_or_throw(
      [&] {
        if (rank != 0 || plan.same_run_folder) return;
        io::make_dirs(spec.run.output_dir);
        if (::mkdir(dir.c_str(), 0755) != 0) {
          const int err = errno;
          if (err == EEXIST) {
            throw UserError(str_cat(at(spec, "run.name"), dir, " already exists (another run named '",
                                    spec.run.name, "' claimed it first); choose another run.name"));
          }
          throw UserError(str_cat(dir, ": cannot create the run folder (", std::strerror(err), ")"));
        }
      },
      "error: ");
  // A run that stops before its manifest exists gives the folder back (empty,
  // so nothing is lost; rmdir refuses a folder that holds anything).
  auto release_if_empty = [&] {
    if (rank == 0 && !plan.same_run_folder) ::rmdir(dir.c_str());
  };

  // From here a failure on one rank ends every rank (MPI_Abort): others may be
  // inside a collective and would otherwise wait forever. Failures every rank
  // meets together (io::AgreedFailure) end them cleanly instead.
  std::unique_ptr<train::RunEnvironment> env;
  try {
    env = std::make_unique<train::RunEnvironment>(spec);
    return spec.benchmark.enabled ? train::benchmark(*env) : train::train(*env, plan);
  } catch (const io::AgreedFailure& e) {
    if (env) {
      try {
        env->close_results(false, e.what());
      } catch (...) {
      }
    }
    release_if_empty();
    throw;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error on rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    if (env) {
      try {
        env->close_results(false, e.what());
      } catch (...) {
      }
    }
    release_if_empty();
    comm::abort_all_ranks(1);
  }
}

}  // namespace vit
