// Run folders as vit_results sees them: discovery and loading.
//
// A run folder is what the trainer and the benchmark write (docs/metrics.md):
// manifest.json plus one rank_<r>.jsonl per rank. This part finds run folders
// among the paths the user names, reads them, and checks that they agree with
// themselves: every rank file present for the world size, no stray rank file,
// every line a JSON object with the fields the tables need, benchmark lines
// that agree across ranks. Anything else is a vit::UserError whose message
// names the file (and the line, for JSON), so the user knows what to fix.
//
// What is kept is only what the tables and plots show; the rest of each line
// is parsed (so a malformed line is refused) and dropped. Runs whose manifest
// says "running" are skipped with a warning (their files are still being
// written); "failed" runs keep only their manifest, since their rank files may
// stop anywhere, and are listed apart from the tables.
//
// One damaged run folder (no manifest, a malformed file) does not spoil the
// others: load_runs skips it with one warning naming the file at fault and
// reports the rest, unless `strict` makes it an error.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace vit::tools {

struct WorldLayout {
  int size = 0;
  int dp = 0, tp = 0, pp = 0;
  int nodes = 0;
  int ranks_per_node = 0;
  std::string device;        // "cpu" or "cuda"
  std::string communicator;  // "nccl" or "mpi"
};

// One "type":"epoch" line of rank 0.
struct EpochRecord {
  int epoch = 0;
  int64_t steps = 0;
  double avg_loss = 0, it_per_s = 0, images_per_s = 0, time = 0;
};

// One "type":"eval" line of rank 0.
struct EvalRecord {
  std::string split;  // "validation" or "test"
  std::string weights = "last";  // "last", "ema" (the weight average) or "best" (best validation epoch's)
  int epoch = 0;
  double loss = 0, accuracy = 0;
  int64_t count = 0;
};

// The loss of one optimizer step, from rank 0 (the loss is global already).
struct StepLoss {
  int64_t step = 0;
  double loss = 0;
};

// The "type":"benchmark" line: global figures from rank 0, memory over ranks.
// One op's line of benchmark.profile (rank 0's), see docs/metrics.md.
struct ProfileRecord {
  std::string op;
  double ms_per_step = 0, calls_per_step = 0, share = 0;
  double tflops = 0;  // 0 where the op has no FLOP count (memory-bound ops)
  double tbps = 0;    // memory-bound ops that count their bytes: TB/s; 0 otherwise
};

struct BenchmarkRecord {
  int64_t batch_size = 0;    // per data-parallel rank
  int64_t global_batch = 0;  // images per step, each global batch once
  int64_t warmup_steps = 0, steps = 0;
  double images_per_s = 0, it_per_s = 0;
  double step_time_median = 0;  // seconds
  int64_t max_peak_mem = 0;     // bytes, largest peak_mem over all ranks
  double model_tflops_per_gpu = 0;   // 0 when the run did not record it
  double matrix_ceiling_tflops = 0;  // measured with benchmark.profile, else 0
  double memory_ceiling_tbps = 0;    // a device copy's rate, measured with benchmark.profile (GPU), else 0
  // The GPUs' power over the measured steps (NVML), where every rank
  // recorded it (power true); see docs/metrics.md.
  bool power = false;
  double energy_j = 0;            // summed over the ranks
  double power_w = 0;             // mean over the ranks
  double power_limit_w = 0;       // largest over the ranks
  double sm_clock_mhz = 0;        // the lowest of the ranks' medians
  double sm_clock_max_mhz = 0;    // the GPUs' highest SM clock
  double power_capped_share = 0;  // largest over the ranks: share of samples held at the power limit
  double power_span_s = 0;        // shortest over the ranks: the energy counter's span (0: power sampled instead)
  std::vector<ProfileRecord> profile;  // rank 0's, largest first
};

// interrupted: stopped on request (a checkpoint to resume from, usually);
// died: the manifest says "running" but its process is gone
// (io/run_liveness.h). Both are listed with the failed runs.
enum class RunStatus { running, completed, failed, interrupted, died };

struct Run {
  std::filesystem::path dir;
  std::string name;  // manifest "run"
  std::string mode;  // "train" or "benchmark"
  RunStatus status = RunStatus::running;
  std::string error;  // manifest "error" of a failed run; what stopped an interrupted or dead one
  WorldLayout world;
  std::string plugin, precision;
  std::string plugin_variant;  // manifest "plugin_variant" ("stage 1", ...), empty when absent
  int64_t global_batch = 0;
  std::string host, cpu, gpu_name;  // gpu_name empty on CPU runs
  int64_t gpu_memory_bytes = 0;
  std::string git_revision, start_time, end_time;

  // The spec's train.epochs and train.steps from the manifest (-1 where the
  // manifest's spec does not say): a completed run with no epoch lines is
  // whole only when it asked for none.
  int64_t spec_epochs = -1, spec_steps = -1;

  // Training runs (completed only).
  std::vector<EpochRecord> epochs;      // epochs 1..E in order (none for train.epochs 0)
  std::vector<EvalRecord> validation;   // one per epoch that had one, by epoch
  std::optional<EvalRecord> test;       // the last test evaluation of the trained weights (last or ema)
  std::optional<EvalRecord> best_test;  // the test of the best validation epoch's weights (eval.keep_best)
  std::vector<StepLoss> step_losses;    // rank 0, in step order
  int64_t max_step_peak_mem = 0;        // over every step line of every rank

  // Benchmark runs (completed only).
  std::optional<BenchmarkRecord> benchmark;
};

// Every run named on the command line, sorted by (name, folder): completed
// runs for the tables, failed runs for their own list. Runs still in progress
// are left out; each left-out run adds a line to `warnings`.
struct RunSet {
  std::vector<Run> completed;
  std::vector<Run> failed;
  std::vector<std::string> warnings;
  std::vector<std::filesystem::path> damaged;  // run folders skipped as unreadable
};

// Resolves the user's paths into run folders: a folder holding manifest.json
// is a run; any other folder contributes its immediate subfolders that hold
// manifest.json. A subfolder that looks like a run but has no manifest (rank
// files, or a manifest's leftover temporary: a run whose disk filled up at
// start) is a damaged run: with `strict` refused, otherwise added to
// `damaged` with a warning naming the missing manifest. A named path that is
// a plain file, or a folder with no run in it, is left out with a warning.
// Returns the folders sorted, each once.
std::vector<std::filesystem::path> find_run_folders(const std::vector<std::filesystem::path>& paths,
                                                    std::vector<std::string>& warnings, bool strict = true,
                                                    std::vector<std::filesystem::path>* damaged = nullptr);

// Reads one run folder. Throws vit::UserError naming the file at fault.
Run load_run(const std::filesystem::path& dir);

// find_run_folders + load_run for each, sorted and split by status. A run
// folder that cannot be read is skipped with one warning naming the file at
// fault (and listed in `damaged`), unless `strict`: then its vit::UserError
// stops everything. Throws vit::UserError when no run folder is found at all,
// or when every one found is damaged. Each warning is also written to
// `warnings_now` (when given) the moment it arises, so that it is seen even
// when a later run folder is refused.
RunSet load_runs(const std::vector<std::filesystem::path>& paths, std::ostream* warnings_now = nullptr,
                 bool strict = false);

}  // namespace vit::tools
