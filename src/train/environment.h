// What every run needs once, built in this order on every rank:
// preflight checks of the user's input (no GPU touched; all ranks agree on
// failure), the world and its device, the GPU runtime, the process mesh,
// the results folder with its manifest and this rank's metrics file.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/bootstrap.h"
#include "comm/process_mesh.h"
#include "core/context.h"
#include "io/metrics.h"
#include "io/spec.h"

namespace vit::train {


// Runs `check` on every rank; if it throws vit::UserError on any rank, every
// rank returns false after the message was printed once (by the lowest
// failing rank). Nothing is left hanging in a collective.
bool all_ranks_ok(const std::function<void()>& check);

// How a resumed run meets its results folder (train/resume.h decides).
struct ResultsResume {
  std::string checkpoint;             // the folder resumed from
  int64_t step = 0;                   // its step
  bool same_folder = false;           // continue the run folder's files ...
  std::vector<int64_t> keep_bytes;    // ... each rank's cut back to this many bytes (by world rank)
  std::string plugin;                 // what wrote the checkpoint, for the manifest
  int world_size = 0;
};

// Where plugin.gemm_tuning_cache points: "auto" is
// <run.output_dir>/gemm_tuning.tsv; "" = no cache.
std::string gemm_tuning_cache_path(const ExperimentSpec& spec);

class RunEnvironment {
 public:
  // Also starts the collective watchdog (run.collective_timeout_s).
  explicit RunEnvironment(const ExperimentSpec& spec);
  ~RunEnvironment();

  const ExperimentSpec& spec() const { return spec_; }
  const comm::WorldInfo& world() const { return world_; }
  const Context& ctx() const { return ctx_; }
  comm::ProcessMesh& mesh() { return *mesh_; }
  bool is_rank0() const { return world_.rank == 0; }

  // Results: <output_dir>/<name>/manifest.json (rank 0), then rank_<r>.jsonl,
  // in the folder run_experiment claimed (the manifest first, so a run folder
  // never holds rank files without one). Collective; a failure to write
  // either stops every rank together (io::AgreedFailure). The manifest records rank 0's host and pid and a heartbeat that a thread
  // of rank 0 rewrites every io::kHeartbeatSeconds until the run closes. A
  // resumed run (resume != nullptr) continues the folder's files or starts a
  // new folder, and lists the resume in the manifest's "resumes".
  void open_results(const std::string& mode, const std::string& plugin, int64_t global_batch,
                    const std::string& plugin_variant = "", const ResultsResume* resume = nullptr);
  void record(const nlohmann::json& line) { metrics_.write(line); }
  // Bytes of this rank's metrics file so far (a checkpoint records them).
  int64_t metrics_bytes() const { return metrics_.bytes(); }
  // Rewrites the manifest with status "completed" or "failed" and `error`
  // (for a completed run: what went wrong after training, e.g. the export).
  // Collective when ok (every rank calls it at the end of the run); on an
  // error path (ok false) this rank alone.
  void close_results(bool ok, const std::string& error = "");
  // Status "interrupted": stopped on request (`reason`, e.g. "SIGTERM") after
  // `step`; `checkpoint` is what a resume continues from ("" when none).
  void close_results_interrupted(const std::string& reason, int64_t step, const std::string& checkpoint);
  const std::string& results_dir() const { return results_dir_; }

  // Peak memory for the metrics: GPU allocations, or the CPU's resident set.
  size_t peak_memory() const;
  // This rank's GPU as NVML names it ("0000:3b:00.0"); "" on a CPU run.
  std::string gpu_bus_id() const;

  // Writes this rank's new GEMM tuning results to plugin.gemm_tuning_cache
  // (nothing without one, or when nothing is new). The trainer calls it after
  // the first step, close_results at the end. A file that cannot be written
  // is a warning (once a rank): the cache only saves start-up time.
  void save_gemm_tuning();

 private:
  nlohmann::json hardware() const;
  void write_manifest();  // rank 0, with mu_ held
  void stop_heartbeat();
  ExperimentSpec spec_;
  comm::WorldInfo world_;
  std::shared_ptr<void> gpu_;  // the CUDA runtime (stream, library handles); CUDA builds only
  Context ctx_;
  std::unique_ptr<comm::ProcessMesh> mesh_;
  std::string results_dir_;
  io::JsonlWriter metrics_;
  nlohmann::json manifest_;
  std::mutex mu_;            // manifest_ and its file: the heartbeat thread writes too
  bool tuning_save_warned_ = false;
  bool closed_ = false;      // the final status is written; no heartbeat may overwrite it
  bool heartbeat_stop_ = false;
  std::thread heartbeat_;
  std::condition_variable heartbeat_cv_;
};

}  // namespace vit::train
