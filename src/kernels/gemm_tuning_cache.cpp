// The GEMM tuning cache file (see gemm_tuning_cache.h).
#include "kernels/gemm_tuning_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace vit {
namespace {

constexpr const char* kHeader = "# vit_hpc gemm tuning cache v1";
constexpr const char* kColumns =
    "# gpu\tlibrary\tkey\twide\talgo (8 x 64-bit words, hex)\tworkspace bytes: cuBLASLt plans that "
    "plugin.gemm_autotune kept (matmul.cu); delete this file to tune afresh";

std::string what_to_do(const std::string& where) {
  return str_cat(where,
                 " is a cache of GEMM tuning results that vit_hpc writes (plugin.gemm_tuning_cache); delete it (the "
                 "next run tunes again and writes a new one) or point plugin.gemm_tuning_cache elsewhere");
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t tab = line.find('\t', start);
    out.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) return out;
    start = tab + 1;
  }
}

bool is_token(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c <= ' ' || c == 0x7f) return false;
  }
  return true;
}

bool parse_u64(const std::string& s, int base, uint64_t& out) {
  if (s.empty() || s.size() > (base == 16 ? 16u : 20u)) return false;
  for (char c : s) {
    if (!(base == 16 ? std::isxdigit(static_cast<unsigned char>(c)) : std::isdigit(static_cast<unsigned char>(c)))) {
      return false;
    }
  }
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, base);
  if (errno != 0 || end != s.c_str() + s.size()) return false;
  out = v;
  return true;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "host";
  return buf;
}

}  // namespace

std::string GemmTuningCache::id(const std::string& gpu, const std::string& library, const std::string& key,
                                bool wide) {
  return gpu + '\t' + library + '\t' + key + (wide ? "\t1" : "\t0");
}

std::string GemmTuningCache::format(const std::vector<GemmTuningEntry>& entries) {
  std::string out = std::string(kHeader) + "\n" + kColumns + "\n";
  char word[17];
  for (const GemmTuningEntry& e : entries) {
    VIT_CHECK(is_token(e.gpu) && is_token(e.library) && is_token(e.key), "GEMM tuning entry with whitespace: '",
              e.gpu, "' '", e.library, "' '", e.key, "'");
    out += e.gpu + '\t' + e.library + '\t' + e.key + '\t' + (e.wide ? "1" : "0") + '\t';
    for (uint64_t w : e.algo) {
      std::snprintf(word, sizeof word, "%016" PRIx64, w);
      out += word;
    }
    out += '\t' + std::to_string(e.workspace) + '\n';
  }
  return out;
}

std::vector<GemmTuningEntry> GemmTuningCache::parse(const std::string& text, const std::string& where) {
  std::vector<GemmTuningEntry> out;
  std::istringstream in(text);
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (n == 1) {
      if (line != kHeader) {
        throw UserError(str_cat(where, ": line 1 is not '", kHeader, "' (a file of another kind or version). ",
                                what_to_do(where)));
      }
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    const std::vector<std::string> f = split_tabs(line);
    auto bad = [&](const std::string& why) {
      return UserError(str_cat(where, ": line ", n, ": ", why, ". ", what_to_do(where)));
    };
    if (f.size() != 6) throw bad(str_cat(f.size(), " tab-separated fields where 6 belong"));
    GemmTuningEntry e;
    e.gpu = f[0];
    e.library = f[1];
    e.key = f[2];
    if (!is_token(e.gpu) || !is_token(e.library) || !is_token(e.key)) throw bad("an empty field or one with spaces");
    if (f[3] != "0" && f[3] != "1") throw bad(str_cat("'wide' is '", f[3], "' (allowed: 0, 1)"));
    e.wide = f[3] == "1";
    if (f[4].size() != 8 * 16) throw bad(str_cat("the algorithm has ", f[4].size(), " hex digits where 128 belong"));
    for (size_t w = 0; w < 8; ++w) {
      if (!parse_u64(f[4].substr(16 * w, 16), 16, e.algo[w])) throw bad("the algorithm is not hexadecimal");
    }
    if (!parse_u64(f[5], 10, e.workspace)) throw bad(str_cat("the workspace '", f[5], "' is not a byte count"));
    out.push_back(e);
  }
  if (n == 0) throw UserError(str_cat(where, ": empty file. ", what_to_do(where)));
  return out;
}

namespace {

// The file's entries; none when it does not exist.
std::vector<GemmTuningEntry> read_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) return {};
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw UserError(str_cat(path, ": cannot read (", std::strerror(errno),
                            ") (plugin.gemm_tuning_cache: a file vit_hpc reads and writes)"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return GemmTuningCache::parse(ss.str(), path);
}

}  // namespace

GemmTuningCache::GemmTuningCache(std::string path) : path_(std::move(path)) {
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    throw UserError(str_cat(path_, ": not a regular file (plugin.gemm_tuning_cache names a file)"));
  }
  for (const GemmTuningEntry& e : read_file(path_)) entries_[id(e.gpu, e.library, e.key, e.wide)] = e;
}

const GemmTuningEntry* GemmTuningCache::find(const std::string& gpu, const std::string& library,
                                             const std::string& key, bool wide) const {
  const auto it = entries_.find(id(gpu, library, key, wide));
  return it == entries_.end() ? nullptr : &it->second;
}

void GemmTuningCache::put(const GemmTuningEntry& e) {
  const std::string k = id(e.gpu, e.library, e.key, e.wide);
  const auto it = entries_.find(k);
  if (it != entries_.end() && it->second == e) return;
  entries_[k] = e;
  unsaved_[k] = e;
}

size_t GemmTuningCache::save() {
  if (unsaved_.empty()) return 0;
  // The file as it is now (another rank or job may have added entries).
  std::map<std::string, GemmTuningEntry> merged;
  for (const GemmTuningEntry& e : read_file(path_)) merged[id(e.gpu, e.library, e.key, e.wide)] = e;
  for (const auto& [k, e] : unsaved_) merged[k] = e;
  std::vector<GemmTuningEntry> list;
  list.reserve(merged.size());
  for (const auto& [k, e] : merged) list.push_back(e);
  const std::string text = format(list);

  const std::string tmp = path_ + ".tmp." + host_name() + "." + std::to_string(::getpid());
  auto fail = [&](const char* what, int err) {
    ::unlink(tmp.c_str());
    return UserError(str_cat(path_, ": ", what, " (", std::strerror(err),
                             ") (plugin.gemm_tuning_cache: its folder must be writable)"));
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
  if (fd < 0) throw fail("cannot write a temporary file beside it", errno);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw fail("cannot write", err);
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) throw fail("cannot write", errno);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) throw fail("cannot rename the new file into place", errno);
  for (const auto& [k, e] : merged) entries_[k] = e;
  const size_t n = unsaved_.size();
  unsaved_.clear();
  return n;
}

}  // namespace vit
