// Writers for the metrics files of docs/metrics.md: one JSON object per line
// for each rank, and the run's manifest, replaced atomically.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace vit::io {

// Appends one compact JSON object per line and flushes it, so that a run
// killed mid-way leaves every finished line readable.
class JsonlWriter {
 public:
  JsonlWriter() = default;
  explicit JsonlWriter(const std::string& path);  // truncates; throws UserError naming the path
  // Continues an existing file after cutting it back to its first
  // `keep_bytes` bytes (a resumed run drops what followed its checkpoint).
  JsonlWriter(const std::string& path, int64_t keep_bytes);
  ~JsonlWriter();
  JsonlWriter(const JsonlWriter&) = delete;
  JsonlWriter& operator=(const JsonlWriter&) = delete;
  JsonlWriter(JsonlWriter&& o) noexcept;
  JsonlWriter& operator=(JsonlWriter&& o) noexcept;

  void write(const nlohmann::json& record);
  bool is_open() const { return file_ != nullptr; }
  // Bytes in the file so far (every line is flushed as it is written).
  int64_t bytes() const { return bytes_; }
  const std::string& path() const { return path_; }

 private:
  std::FILE* file_ = nullptr;
  std::string path_;
  int64_t bytes_ = 0;
};

// Writes `text` to path.tmp.<pid> then renames it over `path`: readers see
// the old file or the new one, never half of one.
void write_file_atomic(const std::string& path, const std::string& text);
void write_json_atomic(const std::string& path, const nlohmann::json& value);

// Several files that belong together (path, text): every one is written to
// its temporary name first; only when all are complete are they renamed into
// place. On a failure (a full disk) every temporary is removed and the files
// already at those paths are left as they were. Throws UserError naming the
// file that could not be written and why.
void write_files_atomic(const std::vector<std::pair<std::string, std::string>>& files);

// Creates a folder and its parents; throws UserError naming it on failure.
void make_dirs(const std::string& path);

// Current time as ISO 8601 UTC with seconds ("2026-11-25T09:14:03Z").
std::string iso_time_now();

}  // namespace vit::io
