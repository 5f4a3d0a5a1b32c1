// A file of cuBLASLt tuning results (plugin.gemm_tuning_cache), so that a
// later run on the same GPU model with the same cuBLASLt skips the timing of
// plugin.gemm_autotune (and of gemm_autotune_wide, tens of seconds at
// start-up). matmul.cu looks plans up here and puts what its tuning kept;
// the run saves the file after its first step and at its end.
//
// cuBLASLt documents its algorithm struct (cublasLtMatmulAlgo_t, 8 64-bit
// words) as serialisable for reuse with the same library version, so an
// entry holds those words with what they are valid for: the GPU (name,
// compute capability, SM count), the cuBLASLt version and the plan's key
// (shape, leading dimensions, types, epilogue, pointer alignments). An entry
// is never trusted blindly: matmul.cu checks it with cublasLtMatmulAlgoCheck
// and runs it beside the heuristic's first answer once, keeping it only when
// the output has the same bits (the tuning's rule).
//
// The file is text, one plan a line, tab-separated:
//   # vit_hpc gemm tuning cache v1 (header; '#' lines are comments)
//   <gpu> <library> <key> <wide 0|1> <algo: 8 x 16 hex digits> <workspace bytes>
// Several GPU models and library versions can share a file. Saving merges
// with the file as it is then (this process's entries win), writes a
// temporary file beside it (named by host and pid) and renames it into
// place, so ranks and jobs that save at once never leave a torn file (the
// last rename wins; at worst an entry is tuned again by a later run).
//
// Plain C++ (no CUDA): the format is tested on the CPU (tests/kernels).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace vit {

struct GemmTuningEntry {
  std::string gpu;      // e.g. "NVIDIA_H200/sm90/132" (no whitespace)
  std::string library;  // e.g. "cublasLt-120805"
  std::string key;      // the plan's key (matmul.cu), comma-separated integers
  bool wide = false;    // found with the wide tuning (runs of the other kind neither use nor replace it)
  std::array<uint64_t, 8> algo{};
  uint64_t workspace = 0;  // bytes the algorithm asked for
  bool operator==(const GemmTuningEntry& o) const {
    return gpu == o.gpu && library == o.library && key == o.key && wide == o.wide && algo == o.algo &&
           workspace == o.workspace;
  }
};

class GemmTuningCache {
 public:
  // Reads `path` (a missing file is an empty cache). A file that is not a
  // tuning cache, or a line that does not read, throws UserError naming the
  // file, the line and what to do (delete the file).
  explicit GemmTuningCache(std::string path);

  const std::string& path() const { return path_; }
  // The entry for this GPU, library and plan key found by a wide tuning (or
  // by the heuristic's list only): each run takes what its own tuning would
  // choose, so a list-only run measures the list.
  const GemmTuningEntry* find(const std::string& gpu, const std::string& library, const std::string& key,
                              bool wide) const;
  // Adds or replaces the entry for (gpu, library, key, wide); one that differs
  // from what the cache held is pending until save().
  void put(const GemmTuningEntry& e);
  size_t size() const { return entries_.size(); }
  size_t pending() const { return unsaved_.size(); }
  // Writes the pending entries (merged with the file as it is now); nothing
  // when none is pending. Throws UserError when the file cannot be written.
  // Returns the number of entries that were pending.
  size_t save();

  // The file's text for these entries, and its parse (`where` names the
  // source in errors). Exposed for the tests.
  static std::string format(const std::vector<GemmTuningEntry>& entries);
  static std::vector<GemmTuningEntry> parse(const std::string& text, const std::string& where);

 private:
  static std::string id(const std::string& gpu, const std::string& library, const std::string& key, bool wide);
  std::string path_;
  std::map<std::string, GemmTuningEntry> entries_;
  std::map<std::string, GemmTuningEntry> unsaved_;  // put since the last save, by id
};

}  // namespace vit
