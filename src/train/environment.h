// What every run needs once, built in this order on every rank:
// preflight checks of the user's input (no GPU touched; all ranks agree on
// failure), the world and its device, the GPU runtime, the process mesh,
// the results folder with its manifest and this rank's metrics file.
#pragma once

#include <functional>
#include <memory>
#include <string>

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

class RunEnvironment {
 public:
  explicit RunEnvironment(const ExperimentSpec& spec);
  ~RunEnvironment();

  const ExperimentSpec& spec() const { return spec_; }
  const comm::WorldInfo& world() const { return world_; }
  const Context& ctx() const { return ctx_; }
  comm::ProcessMesh& mesh() { return *mesh_; }
  bool is_rank0() const { return world_.rank == 0; }

  // Results: <output_dir>/<name>/manifest.json (rank 0), then rank_<r>.jsonl,
  // in the folder run_experiment claimed. Collective; a failure to write
  // either stops every rank together (io::AgreedFailure).
  void open_results(const std::string& mode, const std::string& plugin, int64_t global_batch,
                    const std::string& plugin_variant = "");
  void record(const nlohmann::json& line) { metrics_.write(line); }
  // Rewrites the manifest with status "completed" or "failed" and `error`
  // (for a completed run: what went wrong after training, e.g. the export).
  // Collective when ok (every rank calls it at the end of the run); on an
  // error path (ok false) this rank alone.
  void close_results(bool ok, const std::string& error = "");
  const std::string& results_dir() const { return results_dir_; }

  // Peak memory for the metrics: GPU allocations, or the CPU's resident set.
  size_t peak_memory() const;

 private:
  nlohmann::json hardware() const;
  void write_manifest(const std::string& mode, const std::string& plugin, int64_t global_batch,
                      const std::string& plugin_variant);
  ExperimentSpec spec_;
  comm::WorldInfo world_;
  std::shared_ptr<void> gpu_;  // the CUDA runtime (stream, library handles); CUDA builds only
  Context ctx_;
  std::unique_ptr<comm::ProcessMesh> mesh_;
  std::string results_dir_;
  io::JsonlWriter metrics_;
  nlohmann::json manifest_;
  bool closed_ = false;  // the final manifest is written
};

}  // namespace vit::train
