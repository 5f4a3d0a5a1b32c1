// Training-state checkpoints (see checkpoint.h and docs/checkpoints.md).
#include "train/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_map>

#include "comm/communicator.h"
#include "core/error.h"
#include "io/crc32.h"
#include "io/metrics.h"

namespace vit::train {

namespace fs = std::filesystem;
using nlohmann::json;
using parallel::StatePart;
using parallel::TensorRun;

namespace {

constexpr const char* kIndexFile = "index.json";
constexpr const char* kStateFile = "train_state.json";
constexpr const char* kLatestFile = "latest";

std::string errno_text() { return std::strerror(errno); }

// A file written with write(2) and made durable with fsync before it counts;
// every failure (ENOSPC, EIO, EDQUOT...) is a UserError naming the file.
class DurableFile {
 public:
  explicit DurableFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw UserError(str_cat(path, ": cannot create (", errno_text(), ")"));
  }
  ~DurableFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  DurableFile(const DurableFile&) = delete;
  DurableFile& operator=(const DurableFile&) = delete;

  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    crc_ = io::crc32_update(crc_, p, n);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, std::min<size_t>(n, size_t{1} << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        throw UserError(str_cat(path_, ": write failed after ", bytes_, " bytes (", errno_text(), ")"));
      }
      p += w;
      n -= static_cast<size_t>(w);
      bytes_ += static_cast<uint64_t>(w);
    }
  }
  // fsync, then close: only then is the file complete.
  void finish() {
    if (::fsync(fd_) != 0) throw UserError(str_cat(path_, ": fsync failed (", errno_text(), ")"));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw UserError(str_cat(path_, ": close failed (", errno_text(), ")"));
  }
  uint32_t crc() const { return crc_; }
  uint64_t bytes() const { return bytes_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint32_t crc_ = 0;
  uint64_t bytes_ = 0;
};

// A rename or a new entry is durable once its folder was fsynced.
void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw UserError(str_cat(dir, ": cannot open the folder to sync it (", errno_text(), ")"));
  const int rc = ::fsync(fd);
  const std::string why = rc != 0 ? errno_text() : "";
  ::close(fd);
  if (rc != 0) throw UserError(str_cat(dir, ": fsync of the folder failed (", why, ")"));
}

void rename_or_throw(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) {
    throw UserError(str_cat("cannot rename ", from, " to ", to, " (", errno_text(), ")"));
  }
}

// Writes `text` durably; returns its CRC-32.
uint32_t write_text_durable(const std::string& path, const std::string& text) {
  DurableFile f(path);
  f.write(text.data(), text.size());
  f.finish();
  return f.crc();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(str_cat(path, ": cannot open (", errno_text(), ")"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json(const std::string& text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const std::exception& e) {
    throw UserError(str_cat(where, ": not valid JSON (", e.what(), "): damaged checkpoint"));
  }
}

std::string shard_file_name(int rank) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "rank_%05d.safetensors", rank);
  return buf;
}

// The safetensors name of one slice: "adam_m/blocks.0.attn.qkv.weight[0:1536]".
std::string entry_key(StatePart part, const std::string& tensor, int64_t begin, int64_t count) {
  return str_cat(parallel::state_part_name(part), "/", tensor, "[", begin, ":", begin + count, "]");
}

// step_000123 -> 123; -1 for any other name.
int64_t step_of_folder(const std::string& name) {
  if (name.size() < 6 || name.compare(0, 5, "step_") != 0) return -1;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

bool is_complete(const fs::path& folder) {
  std::error_code ec;
  return fs::is_regular_file(folder / kIndexFile, ec);
}

// Complete step folders under root, oldest first.
std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    const int64_t step = step_of_folder(name);
    if (step >= 0 && is_complete(e.path())) out.emplace_back(step, name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// One tensor of a safetensors file: fp32 values and the shape they have.
struct SafetensorsEntry {
  std::vector<int64_t> shape;
  const float* data = nullptr;
  int64_t count = 0;
};

// Writes a safetensors file of fp32 tensors, durably: an 8-byte little-
// endian header length, the JSON header (entries in key order, data 8-byte
// aligned), then the data in the same order.
void write_safetensors(const std::string& path, const json& metadata,
                       const std::map<std::string, SafetensorsEntry>& entries, uint32_t* crc, uint64_t* bytes) {
  json header = json::object();
  header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [key, e] : entries) {
    const uint64_t n = static_cast<uint64_t>(e.count) * 4;
    header[key] = {{"dtype", "F32"}, {"shape", e.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string head = header.dump();
  head.append((8 - head.size() % 8) % 8, ' ');  // data 8-byte aligned, as safetensors writers do
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((static_cast<uint64_t>(head.size()) >> (8 * i)) & 0xff);
  DurableFile f(path);
  f.write(len, 8);
  f.write(head.data(), head.size());
  for (const auto& [key, e] : entries) f.write(e.data, static_cast<size_t>(e.count) * 4);
  f.finish();
  *crc = f.crc();
  *bytes = f.bytes();
}

// Writes one rank's shard: a safetensors file of 1-D fp32 slices, the same
// runs for every part.
void write_shard(const std::string& path, int rank, const std::vector<TensorRun>& runs,
                 const std::vector<StatePart>& part_ids, const std::vector<std::vector<float>>& parts, uint32_t* crc,
                 uint64_t* bytes) {
  std::map<std::string, SafetensorsEntry> entries;  // sorted: the data follow the header's key order
  for (size_t p = 0; p < parts.size(); ++p) {
    int64_t at = 0;
    for (const TensorRun& r : runs) {
      entries.emplace(entry_key(part_ids[p], r.name, r.begin, r.count),
                      SafetensorsEntry{{r.count}, parts[p].data() + at, r.count});
      at += r.count;
    }
    VIT_CHECK(at == static_cast<int64_t>(parts[p].size()), "export_state(", parallel::state_part_name(part_ids[p]),
              ") gave ", parts[p].size(), " values for runs of ", at);
  }
  const json metadata = {{"format", kCheckpointFormat},
                         {"format_version", std::to_string(kCheckpointFormatVersion)},
                         {"rank", std::to_string(rank)}};
  write_safetensors(path, metadata, entries, crc, bytes);
}

// Rank 0: the best validation's weights, whole, one tensor per parameter
// under its vit_hpc name and global shape.
void write_best_weights(const std::string& path, const model::ParamLayout& layout, const std::vector<float>& w,
                        const TrainState& state, uint32_t* crc, uint64_t* bytes) {
  VIT_CHECK(static_cast<int64_t>(w.size()) == layout.total(), "checkpoint: ", w.size(),
            " best weights for a model of ", layout.total());
  std::map<std::string, SafetensorsEntry> entries;
  for (const model::ParamInfo& p : layout.params()) {
    entries.emplace(p.name, SafetensorsEntry{p.global_shape, w.data() + p.offset, p.numel});
  }
  const json metadata = {{"format", kCheckpointFormat},
                         {"format_version", std::to_string(kCheckpointFormatVersion)},
                         {"content", "eval.keep_best weights"},
                         {"epoch", std::to_string(state.best_epoch)}};
  write_safetensors(path, metadata, entries, crc, bytes);
}

// The first non-empty error of any rank, prefixed with the rank; "" when none.
std::string first_error(const std::vector<std::string>& errors) {
  for (size_t r = 0; r < errors.size(); ++r) {
    if (!errors[r].empty()) return str_cat("rank ", r, ": ", errors[r]);
  }
  return "";
}

void remove_quietly(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
}

}  // namespace

std::string checkpoint_folder_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%06lld", static_cast<long long>(step));
  return buf;
}

std::string find_latest_checkpoint(const std::string& root, std::string* note) {
  std::error_code ec;
  if (root.empty() || !fs::is_directory(root, ec)) return "";
  const fs::path latest = fs::path(root) / kLatestFile;
  std::string why = "is missing";
  if (fs::exists(latest, ec)) {
    std::ifstream in(latest);
    std::string name;
    std::getline(in, name);
    while (!name.empty() && (name.back() == '\r' || name.back() == ' ')) name.pop_back();
    if (step_of_folder(name) >= 0 && is_complete(fs::path(root) / name)) return (fs::path(root) / name).string();
    why = str_cat("names '", name, "', which is not a complete checkpoint");
  }
  const auto all = complete_checkpoints(root);
  if (all.empty()) return "";
  if (note) *note = str_cat(latest.string(), " ", why, "; using the newest complete one, ", all.back().second);
  return (fs::path(root) / all.back().second).string();
}

// ---------------------------------------------------------------------------
// Collective helpers
// ---------------------------------------------------------------------------

std::vector<int64_t> all_gather_int64(comm::Communicator& world, int64_t mine) {
  std::vector<int64_t> all(static_cast<size_t>(world.size()));
  world.all_gather(&mine, all.data(), 8, DType::U8, Device::CPU);
  return all;
}

std::vector<std::string> all_gather_strings(comm::Communicator& world, const std::string& mine) {
  const std::vector<int64_t> lengths = all_gather_int64(world, static_cast<int64_t>(mine.size()));
  const int64_t width = std::max<int64_t>(1, *std::max_element(lengths.begin(), lengths.end()));
  std::string padded = mine;
  padded.resize(static_cast<size_t>(width), '\0');
  std::string all(static_cast<size_t>(width) * lengths.size(), '\0');
  world.all_gather(padded.data(), all.data(), static_cast<size_t>(width), DType::U8, Device::CPU);
  std::vector<std::string> out;
  for (size_t r = 0; r < lengths.size(); ++r) {
    out.push_back(all.substr(r * static_cast<size_t>(width), static_cast<size_t>(lengths[r])));
  }
  return out;
}

// ---------------------------------------------------------------------------
// Saving
// ---------------------------------------------------------------------------

SaveOutcome save_checkpoint(const std::string& root, const TrainState& state, parallel::Plugin& plugin,
                            const model::ParamLayout& layout, comm::Communicator& world, int keep_last,
                            const std::vector<float>& best_weights) {
  VIT_CHECK(keep_last >= 1, "keep_last ", keep_last);
  const auto t0 = std::chrono::steady_clock::now();
  const bool rank0 = world.rank() == 0;
  const std::string name = checkpoint_folder_name(state.step);
  const std::string final_dir = (fs::path(root) / name).string();
  const std::string tmp_dir = (fs::path(root) / (".tmp." + name)).string();
  SaveOutcome out;

  // 1. Rank 0 makes the temporary folder (clearing leftovers of a save that
  // was killed half-way).
  std::string err;
  if (rank0) {
    try {
      io::make_dirs(root);
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(root, ec)) {
        const std::string n = e.path().filename().string();
        if (n.rfind(".tmp.", 0) == 0 || n.rfind(".old.", 0) == 0) remove_quietly(e.path().string());
      }
      if (::mkdir(tmp_dir.c_str(), 0755) != 0) {
        throw UserError(str_cat(tmp_dir, ": cannot create (", errno_text(), ")"));
      }
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  err = all_gather_strings(world, err)[0];
  if (!err.empty()) {
    out.error = str_cat("rank 0: ", err);
    return out;
  }

  // 2. Every rank writes its runs of the parts (master, adam_m, adam_v, and
  // ema when the run keeps a weight average).
  const std::vector<TensorRun> runs = plugin.state_runs();
  const std::vector<StatePart> part_ids = plugin.state_parts();
  std::vector<std::vector<float>> parts;
  for (StatePart p : part_ids) parts.push_back(plugin.export_state(p));
  const std::string shard = shard_file_name(world.rank());
  uint32_t crc = 0;
  uint64_t bytes = 0;
  err.clear();
  try {
    write_shard((fs::path(tmp_dir) / shard).string(), world.rank(), runs, part_ids, parts, &crc, &bytes);
  } catch (const std::exception& e) {
    err = e.what();
  }
  parts.clear();
  json record = {{"file", shard}, {"bytes", bytes}, {"crc32", io::crc32_hex(crc)}, {"error", err}};
  json run_list = json::array();
  for (const TensorRun& r : runs) run_list.push_back({r.name, r.begin, r.count});
  record["runs"] = std::move(run_list);
  const std::vector<std::string> records = all_gather_strings(world, record.dump());

  // 3. Rank 0 checks that the shards cover every tensor once, writes the
  // train state and the index, and puts the folder in place.
  err.clear();
  if (rank0) {
    try {
      std::vector<json> recs;
      std::vector<std::string> errors;
      for (const std::string& r : records) {
        recs.push_back(json::parse(r));
        errors.push_back(recs.back().at("error").get<std::string>());
      }
      const std::string write_error = first_error(errors);
      if (!write_error.empty()) throw UserError(write_error);

      json files = json::object();
      std::map<std::string, std::vector<json>> slices;  // tensor -> slices
      for (const json& r : recs) {
        out.bytes += r.at("bytes").get<uint64_t>();
        files[r.at("file").get<std::string>()] = {{"bytes", r.at("bytes")}, {"crc32", r.at("crc32")}};
        for (const json& run : r.at("runs")) {
          slices[run.at(0).get<std::string>()].push_back(
              {{"file", r.at("file")}, {"begin", run.at(1)}, {"count", run.at(2)}});
        }
      }
      json tensors = json::array();
      for (const model::ParamInfo& p : layout.params()) {
        std::vector<json>& sl = slices[p.name];
        std::sort(sl.begin(), sl.end(), [](const json& a, const json& b) {
          return a.at("begin").get<int64_t>() < b.at("begin").get<int64_t>();
        });
        int64_t covered = 0;
        for (const json& s : sl) {
          VIT_CHECK(s.at("begin").get<int64_t>() == covered, "checkpoint: tensor ", p.name,
                    ": the ranks' runs leave a gap or overlap at element ", covered, " (plugin ", plugin.name(), ")");
          covered += s.at("count").get<int64_t>();
        }
        const int64_t numel = p.numel;
        VIT_CHECK(covered == numel, "checkpoint: tensor ", p.name, ": the ranks' runs cover ", covered, " of ", numel,
                  " elements (plugin ", plugin.name(), ")");
        tensors.push_back({{"name", p.name}, {"shape", p.global_shape}, {"slices", sl}});
        slices.erase(p.name);
      }
      VIT_CHECK(slices.empty(), "checkpoint: the plugin wrote a tensor the layout does not have: ",
                slices.empty() ? "" : slices.begin()->first);

      // eval.keep_best: the best weights, whole, from rank 0's copy.
      const bool best = state.keep_best && state.best_epoch > 0;
      if (best) {
        uint32_t best_crc = 0;
        uint64_t best_bytes = 0;
        write_best_weights((fs::path(tmp_dir) / kBestWeightsFile).string(), layout, best_weights, state, &best_crc,
                           &best_bytes);
        files[kBestWeightsFile] = {{"bytes", best_bytes}, {"crc32", io::crc32_hex(best_crc)}};
        out.bytes += best_bytes;
      }
      json part_names = json::array();
      for (StatePart p : part_ids) part_names.push_back(parallel::state_part_name(p));

      const std::string state_text = train_state_to_json(state).dump(1) + "\n";
      const uint32_t state_crc = write_text_durable((fs::path(tmp_dir) / kStateFile).string(), state_text);
      files[kStateFile] = {{"bytes", state_text.size()}, {"crc32", io::crc32_hex(state_crc)}};
      json index = {{"format", kCheckpointFormat},
                    {"format_version", kCheckpointFormatVersion},
                    {"step", state.step},
                    {"created", io::iso_time_now()},
                    {"dtype", "F32"},
                    {"parts", part_names},
                    {"entry_name", "<part>/<tensor>[<begin>:<end>] in the file named by the slice"},
                    {"writer", state.layout},
                    {"files", files},
                    {"tensors", tensors}};
      if (best) index["best_weights"] = kBestWeightsFile;
      write_text_durable((fs::path(tmp_dir) / kIndexFile).string(), index.dump(1) + "\n");
      fsync_dir(tmp_dir);

      // In place: a checkpoint of the same step (saved again after a
      // resume) is replaced, never merged.
      std::error_code ec;
      if (fs::exists(final_dir, ec)) {
        const std::string old = (fs::path(root) / (".old." + name)).string();
        rename_or_throw(final_dir, old);
        rename_or_throw(tmp_dir, final_dir);
        remove_quietly(old);
      } else {
        rename_or_throw(tmp_dir, final_dir);
      }
      fsync_dir(root);

      // `latest` last, atomically: the old pointer or the new one, never half.
      const std::string latest = (fs::path(root) / kLatestFile).string();
      const std::string latest_tmp = latest + ".tmp";
      try {
        write_text_durable(latest_tmp, name + "\n");
        rename_or_throw(latest_tmp, latest);
        fsync_dir(root);
      } catch (...) {
        std::remove(latest_tmp.c_str());
        throw;
      }

      // Only now, older checkpoints beyond keep_last.
      const auto all = complete_checkpoints(root);
      for (size_t i = 0; i + static_cast<size_t>(keep_last) < all.size(); ++i) {
        if (all[i].second != name) remove_quietly((fs::path(root) / all[i].second).string());
      }
    } catch (const std::exception& e) {
      err = e.what();
      remove_quietly(tmp_dir);
    }
  }
  const std::vector<std::string> outcome = all_gather_strings(world, rank0 ? err : std::string());
  if (!rank0) {
    for (const std::string& r : records) out.bytes += json::parse(r).at("bytes").get<uint64_t>();
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!outcome[0].empty()) {
    out.error = outcome[0];
    out.bytes = 0;
    return out;
  }
  out.ok = true;
  out.path = final_dir;
  return out;
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

struct CheckpointReader::Impl {
  struct Slice {
    int64_t begin = 0, count = 0;
    int file = -1;
  };
  struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    int64_t numel = 0;
    std::vector<Slice> slices;  // sorted, contiguous, covering [0, numel)
  };
  struct Shard {
    std::string name;
    uint64_t bytes = 0;
    std::string crc;
    int fd = -1;
    bool parsed = false;
    uint64_t data_start = 0;
    std::unordered_map<std::string, std::pair<uint64_t, int64_t>> entries;  // key -> (offset in data, count)
  };

  std::string dir;
  json index;
  TrainState state;
  int version = 0;
  std::vector<Tensor> tensors;
  std::unordered_map<std::string, size_t> by_name;
  std::vector<Shard> shards;
  std::vector<std::string> parts;  // index.json "parts"
  uint64_t bytes_read = 0;

  ~Impl() {
    for (Shard& s : shards) {
      if (s.fd >= 0) ::close(s.fd);
    }
  }

  std::string path_of(const Shard& s) const { return (fs::path(dir) / s.name).string(); }

  void open_shard(Shard& s) {
    if (s.parsed) return;
    const std::string path = path_of(s);
    s.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (s.fd < 0) throw UserError(str_cat(path, ": cannot open (", errno_text(), ")"));
    unsigned char len[8];
    pread_all(s, len, 8, 0);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
    VIT_USER_CHECK(n > 1 && n + 8 <= s.bytes, path, ": header length ", n, " does not fit the file's ", s.bytes,
                   " bytes (damaged checkpoint)");
    std::string head(n, '\0');
    pread_all(s, head.data(), n, 8);
    const json h = parse_json(head, path);
    s.data_start = 8 + n;
    for (auto it = h.begin(); it != h.end(); ++it) {
      if (it.key() == "__metadata__") continue;
      const json& t = it.value();
      VIT_USER_CHECK(t.is_object() && t.value("dtype", "") == "F32" && t.contains("shape") &&
                         t.contains("data_offsets") && t["shape"].size() == 1 && t["data_offsets"].size() == 2,
                     path, ": entry '", it.key(), "' is not a 1-D F32 slice (damaged checkpoint)");
      const auto b = t["data_offsets"][0].get<uint64_t>(), e = t["data_offsets"][1].get<uint64_t>();
      const int64_t count = t["shape"][0].get<int64_t>();
      VIT_USER_CHECK(e >= b && e - b == static_cast<uint64_t>(count) * 4 && s.data_start + e <= s.bytes, path,
                     ": entry '", it.key(), "' has bad data_offsets (damaged checkpoint)");
      s.entries[it.key()] = {b, count};
    }
    s.parsed = true;
  }

  void pread_all(const Shard& s, void* dst, uint64_t n, uint64_t offset) {
    char* p = static_cast<char*>(dst);
    while (n > 0) {
      const ssize_t r = ::pread(s.fd, p, n, static_cast<off_t>(offset));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        throw UserError(str_cat(path_of(s), ": reading ", n, " bytes at ", offset, " failed (",
                                r == 0 ? std::string("unexpected end of file") : errno_text(), ")"));
      }
      p += r;
      n -= static_cast<uint64_t>(r);
      offset += static_cast<uint64_t>(r);
    }
  }
};

CheckpointReader::CheckpointReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  std::error_code ec;
  if (fs::is_regular_file(fs::path(path) / kIndexFile, ec)) {
    s.dir = path;
  } else {
    VIT_USER_CHECK(fs::is_directory(path, ec), path, ": no such checkpoint folder");
    std::string note;
    s.dir = find_latest_checkpoint(path, &note);
    VIT_USER_CHECK(!s.dir.empty(), path, ": holds no complete checkpoint (no step_* folder with index.json)",
                   note.empty() ? "" : str_cat("; ", note));
  }
  const std::string index_path = (fs::path(s.dir) / kIndexFile).string();
  s.index = parse_json(read_text(index_path), index_path);
  const json& ix = s.index;
  VIT_USER_CHECK(ix.is_object() && ix.value("format", "") == kCheckpointFormat, index_path,
                 ": not a vit_hpc checkpoint index (\"format\" is not \"", kCheckpointFormat, "\")");
  VIT_USER_CHECK(ix.contains("format_version") && ix["format_version"].is_number_integer(), index_path,
                 ": \"format_version\" is missing");
  s.version = ix["format_version"].get<int>();
  VIT_USER_CHECK(s.version >= 1 && s.version <= kCheckpointFormatVersion, index_path, ": format version ",
                 s.version, " was written by a newer vit_hpc; this one reads versions 1 to ",
                 kCheckpointFormatVersion);
  VIT_USER_CHECK(ix.value("dtype", "") == "F32", index_path, ": dtype ", ix.value("dtype", "?"),
                 " (this version reads F32)");
  try {
    s.parts = ix.at("parts").get<std::vector<std::string>>();
    for (StatePart p : parallel::kStateParts) {
      VIT_USER_CHECK(std::find(s.parts.begin(), s.parts.end(), parallel::state_part_name(p)) != s.parts.end(),
                     index_path, ": \"parts\" lacks '", parallel::state_part_name(p),
                     "', which every checkpoint holds (damaged checkpoint)");
    }
    const json& files = ix.at("files");
    std::map<std::string, int> shard_of;
    for (auto it = files.begin(); it != files.end(); ++it) {
      if (it.key() == kStateFile || it.key() == kBestWeightsFile) continue;  // not shards
      Impl::Shard sh;
      sh.name = it.key();
      sh.bytes = it.value().at("bytes").get<uint64_t>();
      sh.crc = it.value().at("crc32").get<std::string>();
      shard_of[sh.name] = static_cast<int>(s.shards.size());
      s.shards.push_back(std::move(sh));
    }
    for (const json& t : ix.at("tensors")) {
      Impl::Tensor tensor;
      tensor.name = t.at("name").get<std::string>();
      tensor.shape = t.at("shape").get<std::vector<int64_t>>();
      tensor.numel = 1;
      for (int64_t d : tensor.shape) tensor.numel *= d;
      int64_t covered = 0;
      for (const json& sl : t.at("slices")) {
        Impl::Slice slice;
        slice.begin = sl.at("begin").get<int64_t>();
        slice.count = sl.at("count").get<int64_t>();
        const std::string file = sl.at("file").get<std::string>();
        VIT_USER_CHECK(shard_of.count(file), index_path, ": tensor ", tensor.name, " names file ", file,
                       " that \"files\" does not list");
        slice.file = shard_of[file];
        VIT_USER_CHECK(slice.begin == covered && slice.count > 0, index_path, ": tensor ", tensor.name,
                       ": slices leave a gap or overlap at element ", covered);
        covered += slice.count;
        tensor.slices.push_back(slice);
      }
      VIT_USER_CHECK(covered == tensor.numel, index_path, ": tensor ", tensor.name, ": slices cover ", covered, " of ",
                     tensor.numel, " elements");
      s.by_name[tensor.name] = s.tensors.size();
      s.tensors.push_back(std::move(tensor));
    }
  } catch (const nlohmann::json::exception& e) {
    throw UserError(str_cat(index_path, ": malformed index (", e.what(), ")"));
  }
  // The train state, checked against its CRC-32.
  const std::string state_path = (fs::path(s.dir) / kStateFile).string();
  const std::string state_text = read_text(state_path);
  VIT_USER_CHECK(ix["files"].contains(kStateFile), index_path, ": \"files\" does not list ", kStateFile);
  const std::string want = ix["files"][kStateFile].value("crc32", "");
  const std::string got = io::crc32_hex(io::crc32_update(0, state_text.data(), state_text.size()));
  VIT_USER_CHECK(got == want, state_path, ": CRC-32 ", got, " but index.json says ", want, " (damaged checkpoint)");
  s.state = train_state_from_json(parse_json(state_text, state_path), state_path);
  VIT_USER_CHECK(s.state.step == ix.value("step", int64_t{-1}), state_path, ": step ", s.state.step,
                 " but index.json says ", ix.value("step", int64_t{-1}));
}

CheckpointReader::~CheckpointReader() = default;

const std::string& CheckpointReader::dir() const { return impl_->dir; }
int64_t CheckpointReader::step() const { return impl_->state.step; }
int CheckpointReader::format_version() const { return impl_->version; }
const TrainState& CheckpointReader::state() const { return impl_->state; }
const json& CheckpointReader::index() const { return impl_->index; }
int CheckpointReader::shard_count() const { return static_cast<int>(impl_->shards.size()); }
uint64_t CheckpointReader::bytes_read() const { return impl_->bytes_read; }

bool CheckpointReader::has_part(StatePart part) const {
  return std::find(impl_->parts.begin(), impl_->parts.end(), parallel::state_part_name(part)) != impl_->parts.end();
}

std::vector<float> CheckpointReader::read_best_weights(const model::ParamLayout& layout) const {
  const Impl& s = *impl_;
  const std::string index_path = (fs::path(s.dir) / kIndexFile).string();
  const std::string path = (fs::path(s.dir) / kBestWeightsFile).string();
  VIT_USER_CHECK(s.state.keep_best && s.state.best_epoch > 0, s.dir,
                 ": the checkpoint records no best validation weights (train_state.json keep_best)");
  VIT_USER_CHECK(s.index.value("best_weights", "") == kBestWeightsFile && s.index["files"].contains(kBestWeightsFile),
                 index_path, ": train_state.json records a best epoch (", s.state.best_epoch, ") but the index lists no ",
                 kBestWeightsFile, " (damaged checkpoint)");
  const std::string text = read_text(path);
  const json& listed = s.index["files"][kBestWeightsFile];
  const uint64_t want_bytes = listed.value("bytes", uint64_t{0});
  VIT_USER_CHECK(text.size() == want_bytes, path, ": ", text.size(), " bytes but index.json says ", want_bytes,
                 " (truncated or damaged checkpoint)");
  const std::string want = listed.value("crc32", "");
  const std::string got = io::crc32_hex(io::crc32_update(0, text.data(), text.size()));
  VIT_USER_CHECK(got == want, path, ": CRC-32 ", got, " but index.json says ", want, " (damaged checkpoint)");
  uint64_t n = 0;
  for (int i = 7; i >= 0 && text.size() >= 8; --i) n = (n << 8) | static_cast<unsigned char>(text[static_cast<size_t>(i)]);
  VIT_USER_CHECK(text.size() >= 8 && n > 1 && n + 8 <= text.size(), path, ": header length ", n,
                 " does not fit the file (damaged checkpoint)");
  const json h = parse_json(text.substr(8, n), path);
  const uint64_t data_start = 8 + n;
  std::vector<float> out(static_cast<size_t>(layout.total()));
  for (const model::ParamInfo& p : layout.params()) {
    VIT_USER_CHECK(h.contains(p.name), path, ": tensor ", p.name, " is missing (damaged checkpoint, or another model)");
    const json& t = h[p.name];
    VIT_USER_CHECK(t.value("dtype", "") == "F32" && t.contains("shape") && t.contains("data_offsets") &&
                       t["shape"].get<std::vector<int64_t>>() == p.global_shape,
                   path, ": tensor ", p.name, " is not F32 of this model's shape (damaged checkpoint, or another model)");
    const auto b = t["data_offsets"][0].get<uint64_t>(), e = t["data_offsets"][1].get<uint64_t>();
    VIT_USER_CHECK(e >= b && e - b == static_cast<uint64_t>(p.numel) * 4 && data_start + e <= text.size(), path,
                   ": tensor ", p.name, " has bad data_offsets (damaged checkpoint)");
    std::memcpy(out.data() + p.offset, text.data() + data_start + b, e - b);
  }
  return out;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> CheckpointReader::tensors() const {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  for (const auto& t : impl_->tensors) out.emplace_back(t.name, t.shape);
  return out;
}

void CheckpointReader::verify_shards(int k, int n) const {
  for (size_t i = 0; i < impl_->shards.size(); ++i) {
    if (static_cast<int>(i % static_cast<size_t>(n)) != k) continue;
    const Impl::Shard& s = impl_->shards[i];
    const std::string path = impl_->path_of(s);
    uint64_t bytes = 0;
    const std::string got = io::crc32_hex(io::crc32_of_file(path, &bytes));
    VIT_USER_CHECK(bytes == s.bytes, path, ": ", bytes, " bytes but index.json says ", s.bytes,
                   " (truncated or damaged checkpoint)");
    VIT_USER_CHECK(got == s.crc, path, ": CRC-32 ", got, " but index.json says ", s.crc, " (damaged checkpoint)");
  }
}

void CheckpointReader::check_matches(const model::ParamLayout& layout) const {
  std::vector<std::string> problems;
  auto shape_text = [](const std::vector<int64_t>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += str_cat(i ? ", " : "", v[i]);
    return s + "]";
  };
  for (const model::ParamInfo& p : layout.params()) {
    const auto it = impl_->by_name.find(p.name);
    if (it == impl_->by_name.end()) {
      problems.push_back(str_cat("tensor ", p.name, " is missing"));
    } else if (impl_->tensors[it->second].shape != p.global_shape) {
      problems.push_back(str_cat("tensor ", p.name, " has shape ", shape_text(impl_->tensors[it->second].shape),
                                 " in the checkpoint and ", shape_text(p.global_shape), " in this model"));
    }
  }
  for (const auto& t : impl_->tensors) {
    if (layout.find(t.name) < 0) problems.push_back(str_cat("tensor ", t.name, " is not part of this model"));
  }
  if (problems.empty()) return;
  std::string msg = str_cat(impl_->dir, ": the checkpoint does not fit this model (the model section of the spec "
                                        "must match the one that wrote it): ");
  for (size_t i = 0; i < problems.size() && i < 5; ++i) msg += (i ? "; " : "") + problems[i];
  if (problems.size() > 5) msg += str_cat("; and ", problems.size() - 5, " more");
  throw UserError(msg);
}

void CheckpointReader::read(StatePart part, const TensorRun& run, float* dst) {
  Impl& s = *impl_;
  VIT_USER_CHECK(has_part(part), s.dir, ": the checkpoint holds no state part '", parallel::state_part_name(part),
                 "' (index.json \"parts\")");
  const auto it = s.by_name.find(run.name);
  VIT_USER_CHECK(it != s.by_name.end(), s.dir, ": the checkpoint holds no tensor '", run.name, "'");
  const Impl::Tensor& t = s.tensors[it->second];
  VIT_USER_CHECK(run.begin >= 0 && run.count >= 0 && run.begin + run.count <= t.numel, s.dir, ": elements [",
                 run.begin, ", ", run.begin + run.count, ") of tensor ", run.name, " lie outside its ", t.numel);
  const int64_t end = run.begin + run.count;
  // The first slice that ends after run.begin.
  auto sl = std::upper_bound(t.slices.begin(), t.slices.end(), run.begin,
                             [](int64_t v, const Impl::Slice& x) { return v < x.begin + x.count; });
  for (; sl != t.slices.end() && sl->begin < end; ++sl) {
    Impl::Shard& sh = s.shards[static_cast<size_t>(sl->file)];
    s.open_shard(sh);
    const std::string key = entry_key(part, t.name, sl->begin, sl->count);
    const auto e = sh.entries.find(key);
    VIT_USER_CHECK(e != sh.entries.end() && e->second.second == sl->count, s.path_of(sh), ": entry '", key,
                   "' that index.json promises is missing (damaged checkpoint)");
    const int64_t a = std::max(run.begin, sl->begin), b = std::min(end, sl->begin + sl->count);
    const uint64_t n = static_cast<uint64_t>(b - a) * 4;
    s.pread_all(sh, dst + (a - run.begin), n, sh.data_start + e->second.first + static_cast<uint64_t>(a - sl->begin) * 4);
    s.bytes_read += n;
  }
}

std::vector<float> CheckpointReader::read_tensor(StatePart part, const std::string& name) {
  const auto it = impl_->by_name.find(name);
  VIT_USER_CHECK(it != impl_->by_name.end(), impl_->dir, ": the checkpoint holds no tensor '", name, "'");
  std::vector<float> out(static_cast<size_t>(impl_->tensors[it->second].numel));
  read(part, TensorRun{name, 0, static_cast<int64_t>(out.size())}, out.data());
  return out;
}

}  // namespace vit::train
