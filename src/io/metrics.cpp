#include "io/metrics.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <utility>

#include "core/error.h"

namespace vit::io {

JsonlWriter::JsonlWriter(const std::string& path) : path_(path) {
  file_ = std::fopen(path.c_str(), "w");
  if (file_ == nullptr) throw UserError(str_cat(path, ": cannot write metrics (", std::strerror(errno), ")"));
}

JsonlWriter::JsonlWriter(const std::string& path, int64_t keep_bytes) : path_(path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw UserError(str_cat(path, ": cannot continue the metrics file (", std::strerror(errno), ")"));
  }
  if (st.st_size < keep_bytes) {
    throw UserError(str_cat(path, ": holds ", st.st_size, " bytes, fewer than the ", keep_bytes,
                            " the checkpoint recorded: the metrics of this run folder were changed since"));
  }
  if (::truncate(path.c_str(), keep_bytes) != 0) {
    throw UserError(str_cat(path, ": cannot cut back to ", keep_bytes, " bytes (", std::strerror(errno), ")"));
  }
  file_ = std::fopen(path.c_str(), "a");
  if (file_ == nullptr) throw UserError(str_cat(path, ": cannot write metrics (", std::strerror(errno), ")"));
  bytes_ = keep_bytes;
}

JsonlWriter::~JsonlWriter() {
  if (file_) std::fclose(file_);
}

JsonlWriter::JsonlWriter(JsonlWriter&& o) noexcept
    : file_(std::exchange(o.file_, nullptr)), path_(std::move(o.path_)), bytes_(o.bytes_) {}

JsonlWriter& JsonlWriter::operator=(JsonlWriter&& o) noexcept {
  if (this != &o) {
    if (file_) std::fclose(file_);
    file_ = std::exchange(o.file_, nullptr);
    path_ = std::move(o.path_);
    bytes_ = o.bytes_;
  }
  return *this;
}

void JsonlWriter::write(const nlohmann::json& record) {
  if (file_ == nullptr) return;
  const std::string line = record.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
    throw UserError(str_cat(path_, ": writing metrics failed (", std::strerror(errno), ")"));
  }
  bytes_ += static_cast<int64_t>(line.size());
}

void write_file_atomic(const std::string& path, const std::string& text) { write_files_atomic({{path, text}}); }

void write_files_atomic(const std::vector<std::pair<std::string, std::string>>& files) {
  const std::string suffix = ".tmp." + std::to_string(::getpid());
  std::vector<std::string> temps;
  auto remove_temps = [&] {
    for (const std::string& t : temps) std::remove(t.c_str());
  };
  for (const auto& [path, text] : files) {
    const std::string tmp = path + suffix;
    std::FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr) {
      const std::string why = std::strerror(errno);
      remove_temps();
      throw UserError(str_cat(path, ": cannot write (", why, ")"));
    }
    temps.push_back(tmp);
    errno = 0;
    const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0;
    const int write_errno = errno;
    const bool closed = std::fclose(f) == 0;
    if (!ok || !closed) {
      const std::string why = std::strerror(!ok && write_errno != 0 ? write_errno : errno);
      remove_temps();
      throw UserError(str_cat(path, ": cannot write (", why, ")"));
    }
  }
  for (size_t i = 0; i < files.size(); ++i) {
    if (std::rename(temps[i].c_str(), files[i].first.c_str()) != 0) {
      const std::string why = std::strerror(errno);
      for (size_t k = i; k < temps.size(); ++k) std::remove(temps[k].c_str());
      throw UserError(str_cat(files[i].first, ": cannot write (", why, ")"));
    }
  }
}

void write_json_atomic(const std::string& path, const nlohmann::json& value) {
  write_file_atomic(path, value.dump(2) + "\n");
}

void make_dirs(const std::string& path) {
  if (path.empty()) return;
  std::string partial;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    partial = path.substr(0, pos);
    if (partial.empty()) continue;
    if (::mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) {
      throw UserError(str_cat(partial, ": cannot create folder (", std::strerror(errno), ")"));
    }
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw UserError(str_cat(path, ": is not a folder"));
  }
}

std::string iso_time_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace vit::io
