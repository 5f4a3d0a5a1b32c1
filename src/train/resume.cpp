#include "train/resume.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/run_liveness.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace vit::train {

namespace fs = std::filesystem;

namespace {

std::string canonical(const std::string& p) {
  std::error_code ec;
  const fs::path c = fs::weakly_canonical(p, ec);
  return ec ? p : c.string();
}

}  // namespace

ResumePlan plan_resume(const ExperimentSpec& spec, int world_rank, int world_size) {
  ResumePlan plan;
  const CheckpointSpec& c = spec.checkpoint;
  const std::string run_dir = spec.run.output_dir + "/" + spec.run.name;
  const std::string manifest_path = run_dir + "/manifest.json";
  std::error_code ec;
  const bool folder_exists = fs::exists(manifest_path, ec);

  if (!c.dir.empty()) {
    std::string note;
    const std::string found = find_latest_checkpoint(c.dir, &note);
    if (c.resume == "false" && !found.empty()) {
      throw UserError(str_cat(spec.origin.locate("checkpoint.resume"), ": checkpoint.resume: false, but ", c.dir,
                              " already holds checkpoints (newest: ", fs::path(found).filename().string(),
                              "); this run's would mix with them: resume (checkpoint.resume: auto), choose another "
                              "checkpoint.dir, or remove them"));
    }
    if (c.resume == "true" && found.empty()) {
      throw UserError(str_cat(spec.origin.locate("checkpoint.resume"), ": checkpoint.resume: true, but ", c.dir,
                              " holds no complete checkpoint to resume from",
                              note.empty() ? "" : str_cat(" (", note, ")")));
    }
    if (c.resume != "false") {
      plan.checkpoint = found;
      plan.note = note;
    }
  }

  if (!plan.checkpoint.empty()) {
    CheckpointReader reader(plan.checkpoint);
    reader.check_matches(model::ParamLayout(model_config(spec)));
    reader.verify_shards(world_rank, world_size);
    const TrainState& st = reader.state();
    if (folder_exists) {
      if (canonical(st.results_dir) != canonical(run_dir)) {
        throw UserError(str_cat(manifest_path, ": a run named '", spec.run.name, "' already exists there, and ",
                                plan.checkpoint, " belongs to another run folder (", st.results_dir,
                                "): to resume from it, choose another run.name"));
      }
      if (static_cast<int>(st.metrics_bytes.size()) != world_size) {
        throw UserError(str_cat(run_dir, " holds the metrics files of ", st.metrics_bytes.size(),
                                " ranks and this run has ", world_size, ": resume into another run folder "
                                "(--set run.name=...); the checkpoint itself loads under any layout"));
      }
      std::ifstream in(manifest_path);
      nlohmann::json m;
      try {
        in >> m;
      } catch (const std::exception&) {
        m = nlohmann::json();  // an unreadable manifest is rewritten by the resumed run
      }
      const io::LivenessReport live = io::run_liveness(m);
      if (live.state == io::Liveness::Alive) {
        throw UserError(str_cat(manifest_path, ": run '", spec.run.name, "' is still running (", live.why,
                                "): two runs must not write one folder"));
      }
      plan.same_run_folder = true;
    }
    return plan;
  }
  if (folder_exists) {
    throw UserError(str_cat(manifest_path, ": a run named '", spec.run.name,
                            "' already exists there; choose another run.name (--set run.name=...) or move that folder",
                            c.dir.empty() ? "" : str_cat(" (", c.dir, " holds no checkpoint to resume it from)")));
  }
  return plan;
}

}  // namespace vit::train
