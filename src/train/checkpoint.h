// Training-state checkpoints: save every rank's share of the optimizer state
// plus the trainer's TrainState, and load them back under any layout
// (docs/checkpoints.md is the format's reference).
//
//   <checkpoint.dir>/
//     latest                        one line: the folder of the newest complete checkpoint
//     step_000120/                  one folder per checkpoint, complete or absent
//       index.json                  format, version, step; every tensor: global shape and which
//                                   file holds which slice; every file: size and CRC-32
//       train_state.json            the TrainState (train_state.h)
//       rank_00000.safetensors      rank 0's runs of master weights, AdamW m and v (and the
//                                   weight average, with ema_decay > 0)
//       rank_00001.safetensors      ...
//       best_weights.safetensors    eval.keep_best: the best validation's weights, whole (rank 0)
//     step_000160/ ...
//
// Saving (collective over the world): each rank writes its own shard (its
// runs of full tensors, Plugin::state_runs) into a hidden temporary folder
// and fsyncs it; the ranks exchange only the descriptions of their files;
// rank 0 writes train_state.json and index.json, fsyncs, renames the folder
// into place, then rewrites `latest` (temporary file, fsync, rename) and
// removes checkpoints beyond keep_last. A failure anywhere (a full disk)
// removes the temporary folder and leaves the previous checkpoint and
// `latest` as they were.
//
// Loading: each rank reads only the slices it needs, with pread at the
// offsets the shard headers give, whatever layout wrote them; the CRC-32 of
// every file is checked once, the files spread over the ranks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/params.h"
#include "parallel/plugin.h"
#include "train/train_state.h"

namespace vit::comm {
class Communicator;
}

namespace vit::train {

// What index.json says it is; a reader refuses a newer version by name.
inline constexpr const char* kCheckpointFormat = "vit_hpc.checkpoint";
// Version 2 added the weight average (part "ema") and the keep_best state
// (train_state.json "keep_best", best_weights.safetensors); version 1 is read
// as a checkpoint without them.
inline constexpr int kCheckpointFormatVersion = 2;
// The best validation's weights (eval.keep_best), in the checkpoint folder.
inline constexpr const char* kBestWeightsFile = "best_weights.safetensors";

// "step_000123".
std::string checkpoint_folder_name(int64_t step);

// The newest complete checkpoint under `root`: the folder `latest` names,
// or, when `latest` is missing or names no complete folder, the complete
// step_* folder of the highest step (`note`, when given, then says so).
// "" when there is none (or `root` does not exist).
std::string find_latest_checkpoint(const std::string& root, std::string* note = nullptr);

// One checkpoint folder, its index and train state read and checked.
class CheckpointReader {
 public:
  // `path`: a step folder, or a checkpoint root (its newest complete
  // checkpoint). Checks the format and version, and the CRC-32 of
  // train_state.json. Throws vit::UserError naming the file at fault.
  explicit CheckpointReader(const std::string& path);
  ~CheckpointReader();
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  const std::string& dir() const;
  int64_t step() const;
  int format_version() const;
  const TrainState& state() const;
  const nlohmann::json& index() const;
  // Tensor names and global shapes, in the writer's order.
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors() const;
  int shard_count() const;
  // The checkpoint holds state part `part` (index.json "parts"; version 1:
  // master, adam_m, adam_v).
  bool has_part(parallel::StatePart part) const;
  // The best validation's weights (train_state keep_best with best_epoch >
  // 0): the whole fp32 vector in `layout`'s order, its size and CRC-32 checked
  // against index.json. Throws vit::UserError naming the file.
  std::vector<float> read_best_weights(const model::ParamLayout& layout) const;

  // Checks size and CRC-32 of the shard files numbered i with i % n == k,
  // so that n ranks share the reading. Throws vit::UserError naming the file.
  void verify_shards(int k, int n) const;
  // The checkpoint holds exactly the tensors of `layout` (unsharded), with
  // the same global shapes; throws vit::UserError listing the differences.
  void check_matches(const model::ParamLayout& layout) const;

  // The values of `run` of state part `part`, from whichever shard files
  // hold them (pread of just those bytes).
  void read(parallel::StatePart part, const parallel::TensorRun& run, float* dst);
  std::vector<float> read_tensor(parallel::StatePart part, const std::string& name);
  // Bytes of tensor data read so far.
  uint64_t bytes_read() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct SaveOutcome {
  bool ok = false;
  std::string path;   // the complete checkpoint folder (ok)
  std::string error;  // what went wrong (not ok); the same text on every rank
  uint64_t bytes = 0; // written over all ranks
  double seconds = 0;
};

// Writes the checkpoint of `state` (its step names the folder) under `root`.
// Collective over `world`; every rank returns the same outcome. `layout` is
// the unsharded layout (the tensors' global shapes). keep_last >= 1: older
// complete checkpoints beyond that many are removed once the new one is in
// place. Never throws for an I/O failure: the outcome says it.
// `best_weights` (used on rank 0 only): with state.keep_best and
// state.best_epoch > 0, the best validation's whole fp32 weights in
// `layout`'s order, written as best_weights.safetensors; otherwise ignored.
SaveOutcome save_checkpoint(const std::string& root, const TrainState& state, parallel::Plugin& plugin,
                            const model::ParamLayout& layout, comm::Communicator& world, int keep_last,
                            const std::vector<float>& best_weights = {});

// Every rank's value, in rank order (host memory; collective).
std::vector<int64_t> all_gather_int64(comm::Communicator& world, int64_t mine);
// Every rank's text, in rank order (collective).
std::vector<std::string> all_gather_strings(comm::Communicator& world, const std::string& mine);

}  // namespace vit::train
