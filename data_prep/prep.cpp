// vit_data_prep's pipeline: scan, decode + resize (+ encode) in parallel blocks,
// write HDF5 serially, rename into place. See prep.h for the guarantees.
#include "data_prep/prep.h"

#include <omp.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"
#include "data/format.h"
#include "data/hdf5_util.h"
#include "data/jpeg_codec.h"
#include "data_prep/input_set.h"
#include "data/resize.h"

namespace fs = std::filesystem;

namespace vit::data_prep {

namespace {

using data::JpegCodec;
using data::h5::check_status;
using data::h5::checked;
using data::h5::H5Handle;
namespace fmt = data::format;

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The temporary output: removed on destruction unless committed.
class TempOutput {
 public:
  TempOutput(std::string temp, std::string final_path) : temp_(std::move(temp)), final_(std::move(final_path)) {}
  ~TempOutput() {
    if (!committed_) discard();
  }
  const std::string& temp_path() const { return temp_; }
  // Drops the file. Its bytes are freed FIRST (truncated to nothing): on a
  // full disk, closing would otherwise try to flush HDF5's pending metadata,
  // fail, and leave the library in a state that crashes at exit. With the
  // space back the close succeeds; the file is then removed.
  void discard() {
    if (discarded_) return;
    discarded_ = true;
    if (::truncate(temp_.c_str(), 0) != 0) {
      // Nothing to free (the file may not exist yet): close regardless.
    }
    file.close();
    std::error_code ec;
    fs::remove(temp_, ec);
  }
  // Closes (flushes) the file and renames it over the final path. A failed
  // flush arrives as vit::Error carrying HDF5's reason (see write_failure).
  void commit() {
    if (!file.close()) {
      const std::string why = data::h5::last_error_text();
      discard();
      VIT_THROW("HDF5: finishing the file failed: ", why);
    }
    if (std::rename(temp_.c_str(), final_.c_str()) != 0) {
      const std::string why = std::strerror(errno);
      discard();
      throw UserError(str_cat(final_, ": cannot rename ", temp_, " into place: ", why));
    }
    committed_ = true;
  }
  H5Handle file;

 private:
  std::string temp_, final_;
  bool committed_ = false;
  bool discarded_ = false;
};

class ProgressBar {
 public:
  ProgressBar(bool enabled, std::string label, int64_t total)
      : enabled_(enabled), label_(std::move(label)), total_(total), t0_(Clock::now()) {
    draw(0);
  }
  // Redraws at most every 100 ms (and always at the end).
  void update(int64_t done) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    draw(done);
  }
  void finish() {
    if (!enabled_) return;
    draw(total_);
    std::fputc('\n', stderr);
  }

 private:
  void draw(int64_t done) {
    if (!enabled_) return;
    constexpr int kWidth = 30;
    const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : kWidth;
    char bar[kWidth + 1];
    for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '#' : '.';
    bar[kWidth] = '\0';
    const double dt = seconds_since(t0_);
    std::fprintf(stderr, "\r%-12s [%s] %6lld/%-6lld %7.1f img/s", label_.c_str(), bar, static_cast<long long>(done),
                 static_cast<long long>(total_), dt > 0 ? done / dt : 0.0);
    std::fflush(stderr);
  }
  bool enabled_;
  std::string label_;
  int64_t total_;
  Clock::time_point t0_, last_{};
};

// What each worker thread keeps between images.
struct WorkerState {
  JpegCodec codec;
  std::vector<uint8_t> bytes;     // the source file
  std::vector<uint8_t> decoded;   // (h, w, 3)
  std::vector<uint8_t> resized;   // (S, S, 3), jpeg storage only
};

H5Handle object_create_plist(hid_t cls) {
  H5Handle p = checked(H5Pcreate(cls), "H5Pcreate");
  check_status(H5Pset_obj_track_times(p.get(), 0), "H5Pset_obj_track_times");  // no time stamps: same bytes
  return p;
}

void write_strings_dataset(hid_t group, const char* name, const std::vector<std::string>& values) {
  H5Handle type = data::h5::vlen_string_type();
  const hsize_t n = values.size();
  H5Handle space = checked(H5Screate_simple(1, &n, nullptr), "H5Screate_simple");
  H5Handle dcpl = object_create_plist(H5P_DATASET_CREATE);
  H5Handle ds = checked(H5Dcreate2(group, name, type.get(), space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                        std::string("create dataset ") + name);
  std::vector<const char*> ptrs;
  ptrs.reserve(values.size());
  for (const auto& v : values) ptrs.push_back(v.c_str());
  check_status(H5Dwrite(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()),
               std::string("write dataset ") + name);
}

void validate(const PrepOptions& o) {
  VIT_USER_CHECK(o.image_size >= 1 && o.image_size <= 8192, "--image-size ", o.image_size,
                 " is out of range (allowed: 1 to 8192)");
  VIT_USER_CHECK(o.storage == fmt::kStorageRaw || o.storage == fmt::kStorageJpeg, "--storage '",
                 o.storage, "' is not allowed (allowed: raw, jpeg)");
  VIT_USER_CHECK(!o.splits.empty(), "--splits is empty (e.g. --splits train,validation,test)");
  std::set<std::string> uniq;
  for (const auto& s : o.splits) {
    VIT_USER_CHECK(!s.empty() && s.find('/') == std::string::npos && s[0] != '.', "--splits: '", s,
                   "' is not a split name");
    VIT_USER_CHECK(uniq.insert(s).second, "--splits names '", s, "' twice");
  }
  for (const auto& c : o.classes) {
    VIT_USER_CHECK(!c.empty() && c.find('/') == std::string::npos, "--classes: '", c,
                   "' is not a class folder name");
  }
  VIT_USER_CHECK(o.threads >= 0, "--threads ", o.threads, " is negative (0 = all cores)");
}

std::string this_host() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

// "." + the output's file name + ".tmp-": what every temporary of this output starts with.
std::string temp_prefix(const fs::path& out) { return "." + out.filename().string() + ".tmp-"; }

// Refuses an output inside its own input: the temporary and the file would
// sit among the images (and a zip named as output would be destroyed).
void refuse_output_inside_input(const PrepOptions& o) {
  std::error_code ec;
  const fs::path out = fs::weakly_canonical(fs::absolute(o.output, ec), ec);
  for (const std::string& input : o.inputs) {
    std::error_code ec2;
    const fs::path in = fs::weakly_canonical(fs::absolute(input, ec2), ec2);
    if (ec || ec2) continue;
    if (out == in) {
      throw UserError(str_cat(o.output, ": is the input ", input, " itself (--output names a new .h5 file)"));
    }
    if (!fs::is_directory(in, ec2)) continue;
    const fs::path rel = out.lexically_relative(in);
    if (!rel.empty() && *rel.begin() != "..") {
      throw UserError(str_cat(o.output, ": inside the input folder ", input,
                              " (vit_data_prep would write among the images it reads); write it outside, e.g. "
                              "--output data/", fs::path(o.output).filename().string()));
    }
  }
}

// Refuses an output that exists (without overwrite) or cannot be written;
// returns the temporary path beside it.
std::string check_output(const PrepOptions& o) {
  VIT_USER_CHECK(!o.output.empty(), "--output is required (the .h5 file to write)");
  const fs::path out(o.output);
  std::error_code ec;
  const auto st = fs::status(out, ec);
  if (fs::exists(st)) {
    VIT_USER_CHECK(!fs::is_directory(st), o.output, ": is a folder (--output names the .h5 file to write)");
    VIT_USER_CHECK(o.overwrite, o.output, ": already exists (pass --overwrite to replace it)");
  }
  VIT_USER_CHECK(out.has_filename(), o.output, ": not a file name (--output)");
  const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
  VIT_USER_CHECK(fs::is_directory(dir, ec), o.output, ": cannot write: folder ", dir.string(), " does not exist");
  VIT_USER_CHECK(access(dir.c_str(), W_OK) == 0, o.output, ": cannot write: folder ", dir.string(),
                 " is not writable (", std::strerror(errno), ")");
  return (dir / (temp_prefix(out) + this_host() + "-" + std::to_string(getpid()))).string();
}

// The command name of a running process ("" when it does not run).
std::string process_name(long pid) {
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return "";
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(in, name);
  return name.empty() ? "?" : name;
}

// Temporaries of the same output left by runs that were killed: removed (and
// reported). One that a vit_data_prep on this host still writes is refused;
// one from another host is left alone (its writer cannot be seen from here).
std::vector<std::string> remove_stale_temporaries(const PrepOptions& o) {
  const fs::path out(o.output);
  const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
  const std::string prefix = temp_prefix(out), host = this_host();
  std::vector<std::string> removed;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    // <host>-<pid>, or <pid> alone (the name before hosts were recorded: this host).
    const std::string tail = name.substr(prefix.size());
    const size_t dash = tail.rfind('-');
    const std::string pid_text = dash == std::string::npos ? tail : tail.substr(dash + 1);
    const std::string writer_host = dash == std::string::npos ? host : tail.substr(0, dash);
    if (pid_text.empty() || pid_text.size() > 9 ||
        !std::all_of(pid_text.begin(), pid_text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    const long pid = std::stol(pid_text);
    const std::string shown = it->path().string();
    if (writer_host != host) {
      if (o.note) {
        o.note(str_cat(shown, ": a temporary file of ", o.output, " from host ", writer_host, " (pid ", pid,
                       ") is left alone; remove it by hand if no vit_data_prep there is writing it"));
      }
      continue;
    }
    const std::string running = pid == getpid() ? "" : process_name(pid);
    if (running == "vit_data_prep") {
      throw UserError(str_cat(o.output, ": another vit_data_prep (pid ", pid, ") is writing it right now (",
                              shown, "); wait for it to finish or choose another --output"));
    }
    std::error_code rm;
    if (!fs::remove(it->path(), rm) || rm) {
      throw UserError(str_cat(shown, ": a stale temporary file of an interrupted run (pid ", pid,
                              ") cannot be removed: ", rm ? rm.message() : "unknown reason", "; remove it by hand"));
    }
    removed.push_back(shown);
    if (o.note) {
      o.note(str_cat("removed ", shown, ", a temporary file left by an interrupted run (pid ", pid,
                     ", no longer running)"));
    }
  }
  return removed;
}

// Raw storage has a known size: refuse up front when the disk cannot hold it,
// rather than failing after minutes of decoding.
void check_free_space(const PrepOptions& o, const InputManifest& m) {
  if (o.storage != fmt::kStorageRaw) return;  // JPEG sizes are known only once encoded
  int64_t images = 0;
  for (const auto& s : m.splits) images += static_cast<int64_t>(s.images.size());
  const double pixels = static_cast<double>(images) * o.image_size * o.image_size * 3;
  // HDF5's own records (chunk index, names, labels) stay far below 1% + 1 MB.
  const double needed = pixels * 1.01 + 1e6;
  const fs::path out(o.output);
  const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
  struct statvfs vfs {};
  if (::statvfs(dir.c_str(), &vfs) != 0) return;
  const double free_bytes = static_cast<double>(vfs.f_bavail) * static_cast<double>(vfs.f_frsize);
  if (free_bytes >= needed) return;
  auto size_text = [](double bytes) {
    char buf[32];
    if (bytes < 1e6) {
      std::snprintf(buf, sizeof buf, "%.0f kB", bytes / 1e3);
    } else {
      std::snprintf(buf, sizeof buf, "%.1f MB", bytes / 1e6);
    }
    return std::string(buf);
  };
  throw UserError(str_cat(o.output, ": needs about ", size_text(needed), " (", images, " images of ", o.image_size,
                          " x ", o.image_size, " x 3 bytes, --storage raw) but the disk holding ", dir.string(),
                          " has ", size_text(free_bytes), " free; free space there, write elsewhere, or use "
                          "--storage jpeg (about 4x smaller)"));
}

// The user's message for an HDF5 write that failed (`e` carries HDF5's text).
std::string write_failure(const PrepOptions& o, const std::string& hdf5_text) {
  std::string reason = hdf5_text;
  const size_t at = reason.find("failed: ");
  if (at != std::string::npos) reason = reason.substr(at + 8);
  reason = data::h5::short_reason(reason);
  const fs::path out(o.output);
  const std::string dir = out.has_parent_path() ? out.parent_path().string() : ".";
  std::string hint;
  if (reason.find("No space left") != std::string::npos) {
    hint = str_cat(": the disk holding ", dir, " is full (free space there or choose another --output)");
  } else if (reason.find("File too large") != std::string::npos) {
    hint = ": a file-size limit stops it (see ulimit -f), or the file system takes no files this large";
  }
  return str_cat(o.output, ": cannot write (", reason, ")", hint, "; nothing was written");
}

}  // namespace

namespace {

// Why an image far from the output size deserves a note ("" when it does not).
std::string size_note(int width, int height, int S) {
  if (static_cast<int64_t>(width) * 4 < S || static_cast<int64_t>(height) * 4 < S) {
    return "upscaled more than 4x: it will be blurry";
  }
  if (width > static_cast<int64_t>(32) * S || height > static_cast<int64_t>(32) * S) {
    return "shrunk more than 32x: check it is the image you meant";
  }
  return "";
}

// Notes about image sizes: the first few by name, then a count.
constexpr int64_t kListedSizeNotes = 10;

// Writes every split and the root attributes into the open file `file`.
// Throws UserError for bad input; HDF5 failures (a full disk) arrive as
// vit::Error and are turned into a message by the caller.
void write_contents(hid_t file, const PrepOptions& opts, const InputSet& input, const InputManifest& manifest,
                    PrepResult& result) {
  const int S = opts.image_size;
  const size_t image_bytes = static_cast<size_t>(S) * S * 3;
  const bool jpeg = opts.storage == fmt::kStorageJpeg;
  const int threads = opts.threads > 0 ? opts.threads : omp_get_max_threads();
  const int64_t block = std::max<int64_t>(64, 8 * threads);

  std::vector<WorkerState> workers(threads);
  uint64_t checksum = fmt::kFnvOffset;

  for (const SplitManifest& split : manifest.splits) {
    const int64_t N = static_cast<int64_t>(split.images.size());
    H5Handle gcpl = object_create_plist(H5P_GROUP_CREATE);
    H5Handle group = checked(H5Gcreate2(file, split.name.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT),
                             "create group " + split.name);
    data::h5::write_attr_int64(group.get(), fmt::kAttrCount, N);

    // labels and files are known from the manifest: written up front.
    {
      std::vector<int64_t> labels(N);
      std::vector<std::string> files(N);
      for (int64_t i = 0; i < N; ++i) {
        labels[i] = split.images[i].label;
        files[i] = split.images[i].rel_path;
      }
      const hsize_t n = N;
      H5Handle space = checked(H5Screate_simple(1, &n, nullptr), "H5Screate_simple");
      H5Handle dcpl = object_create_plist(H5P_DATASET_CREATE);
      H5Handle ds = checked(H5Dcreate2(group.get(), fmt::kLabels, H5T_STD_I64LE, space.get(), H5P_DEFAULT,
                                       dcpl.get(), H5P_DEFAULT), "create labels");
      check_status(H5Dwrite(ds.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels.data()),
                   "write labels");
      write_strings_dataset(group.get(), fmt::kFiles, files);
    }

    // images: (N, S, S, 3) chunked per image, or (N) variable-length JPEG bytes.
    H5Handle images, vlen_file_type, vlen_mem_type;
    {
      H5Handle dcpl = object_create_plist(H5P_DATASET_CREATE);
      if (jpeg) {
        vlen_file_type = checked(H5Tvlen_create(H5T_STD_U8LE), "H5Tvlen_create");
        vlen_mem_type = checked(H5Tvlen_create(H5T_NATIVE_UINT8), "H5Tvlen_create");
        const hsize_t n = N;
        H5Handle space = checked(H5Screate_simple(1, &n, nullptr), "H5Screate_simple");
        images = checked(H5Dcreate2(group.get(), fmt::kImages, vlen_file_type.get(), space.get(), H5P_DEFAULT,
                                    dcpl.get(), H5P_DEFAULT), "create images");
      } else {
        const hsize_t dims[4] = {static_cast<hsize_t>(N), static_cast<hsize_t>(S), static_cast<hsize_t>(S), 3};
        const hsize_t chunk[4] = {1, static_cast<hsize_t>(S), static_cast<hsize_t>(S), 3};
        check_status(H5Pset_chunk(dcpl.get(), 4, chunk), "H5Pset_chunk");
        // Every image is written: no fill values (HDF5 refuses this for variable-length types).
        check_status(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), "H5Pset_fill_time");
        H5Handle space = checked(H5Screate_simple(4, dims, nullptr), "H5Screate_simple");
        images = checked(H5Dcreate2(group.get(), fmt::kImages, H5T_STD_U8LE, space.get(), H5P_DEFAULT, dcpl.get(),
                                    H5P_DEFAULT), "create images");
      }
    }

    std::vector<uint64_t> digests(N);
    std::vector<uint8_t> block_pixels(jpeg ? 0 : static_cast<size_t>(std::min(block, N)) * image_bytes);
    std::vector<std::vector<uint8_t>> block_jpeg(jpeg ? std::min(block, N) : 0);
    std::vector<std::string> errors(std::min(block, N)), notes(std::min(block, N));
    ProgressBar bar(opts.progress, split.name, N);

    for (int64_t b0 = 0; b0 < N; b0 += block) {
      if (opts.cancel && opts.cancel->load()) throw UserError(str_cat(opts.output, ": interrupted, nothing written"));
      const int64_t k = std::min(block, N - b0);
      std::atomic<int64_t> done_in_block{0};

#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
      for (int64_t j = 0; j < k; ++j) {
        WorkerState& w = workers[omp_get_thread_num()];
        const ImageEntry& e = split.images[b0 + j];
        errors[j].clear();
        notes[j].clear();
        try {
          input.read(e, &w.bytes);
          int width = 0, height = 0;
          std::string why;
          // The header first: an enormous image is refused before its pixels are allocated.
          if (!w.codec.header(w.bytes.data(), w.bytes.size(), &width, &height, &why)) {
            errors[j] = str_cat(input.describe(e), ": not a decodable JPEG image (", why, ")");
          } else if (static_cast<int64_t>(width) * height > kMaxSourcePixels) {
            errors[j] = str_cat(input.describe(e), ": ", width, " x ", height, " pixels is above vit_data_prep's limit of ",
                                kMaxSourcePixels / 1000000, " megapixels per image (decoded it would take ",
                                static_cast<int64_t>(width) * height * 3 / 1000000,
                                " MB); shrink it or leave it out");
          } else if (!w.codec.decode_rgb(w.bytes.data(), w.bytes.size(), &w.decoded, &width, &height, &why)) {
            errors[j] = str_cat(input.describe(e), ": not a decodable JPEG image (", why, ")");
          } else {
            const std::string far = size_note(width, height, S);
            if (!far.empty()) {
              notes[j] = str_cat(input.describe(e), ": ", width, " x ", height, " pixels, far from the ", S, " x ", S,
                                 " output (", far, ")");
            }
            uint8_t* dst = nullptr;
            if (jpeg) {
              w.resized.resize(image_bytes);
              dst = w.resized.data();
            } else {
              dst = block_pixels.data() + j * image_bytes;
            }
            data::resize_rgb_antialiased(w.decoded.data(), width, height, dst, S, S);
            if (jpeg) {
              w.codec.encode_rgb(dst, S, S, fmt::kJpegQuality, &block_jpeg[j]);
              digests[b0 + j] = fmt::image_digest(e.label, block_jpeg[j].data(), block_jpeg[j].size());
            } else {
              digests[b0 + j] = fmt::image_digest(e.label, dst, image_bytes);
            }
          }
        } catch (const std::exception& ex) {
          errors[j] = ex.what();
        }
        const int64_t done = done_in_block.fetch_add(1) + 1;
        if (omp_get_thread_num() == 0) bar.update(b0 + done);
      }

      for (int64_t j = 0; j < k; ++j) {
        if (!errors[j].empty()) throw UserError(errors[j]);  // the first bad image in file order
      }
      for (int64_t j = 0; j < k; ++j) {
        if (notes[j].empty()) continue;
        if (++result.images_far_from_size <= kListedSizeNotes && opts.note) opts.note(notes[j]);
      }

      if (jpeg) {
        std::vector<hvl_t> vl(k);
        for (int64_t j = 0; j < k; ++j) vl[j] = {block_jpeg[j].size(), block_jpeg[j].data()};
        const hsize_t start = b0, count = k;
        H5Handle fspace = checked(H5Dget_space(images.get()), "H5Dget_space");
        check_status(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr),
                     "select images");
        H5Handle mspace = checked(H5Screate_simple(1, &count, nullptr), "H5Screate_simple");
        check_status(H5Dwrite(images.get(), vlen_mem_type.get(), mspace.get(), fspace.get(), H5P_DEFAULT, vl.data()),
                     "write images");
      } else {
        const hsize_t start[4] = {static_cast<hsize_t>(b0), 0, 0, 0};
        const hsize_t count[4] = {static_cast<hsize_t>(k), static_cast<hsize_t>(S), static_cast<hsize_t>(S), 3};
        H5Handle fspace = checked(H5Dget_space(images.get()), "H5Dget_space");
        check_status(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr),
                     "select images");
        H5Handle mspace = checked(H5Screate_simple(4, count, nullptr), "H5Screate_simple");
        check_status(H5Dwrite(images.get(), H5T_NATIVE_UINT8, mspace.get(), fspace.get(), H5P_DEFAULT,
                              block_pixels.data()), "write images");
      }
      bar.update(b0 + k);
    }
    bar.finish();

    // Every image's digest, so that a reader can name a damaged image.
    {
      const hsize_t n = N;
      H5Handle space = checked(H5Screate_simple(1, &n, nullptr), "H5Screate_simple");
      H5Handle dcpl = object_create_plist(H5P_DATASET_CREATE);
      H5Handle ds = checked(H5Dcreate2(group.get(), fmt::kDigests, H5T_STD_U64LE, space.get(), H5P_DEFAULT,
                                       dcpl.get(), H5P_DEFAULT), "create digests");
      check_status(H5Dwrite(ds.get(), H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, digests.data()),
                   "write digests");
    }
    checksum = fmt::fold_split(checksum, split.name, digests.data(), N);
    result.split_counts.emplace_back(split.name, N);
  }
  if (result.images_far_from_size > kListedSizeNotes && opts.note) {
    opts.note(str_cat("... and ", result.images_far_from_size - kListedSizeNotes,
                      " more images far from the output size (not listed)"));
  }

  data::h5::write_attr_int64(file, fmt::kAttrFormatVersion, fmt::kFormatVersion);
  data::h5::write_attr_string(file, fmt::kAttrLayout, fmt::kLayout);
  data::h5::write_attr_strings(file, fmt::kAttrClassNames, manifest.class_names);
  data::h5::write_attr_int64(file, fmt::kAttrImageSize, S);
  data::h5::write_attr_strings(file, fmt::kAttrSplits, opts.splits);
  data::h5::write_attr_string(file, fmt::kAttrStorage, opts.storage);
  data::h5::write_attr_string(file, fmt::kAttrSource, input.source());
  result.checksum = fmt::checksum_hex(checksum);
  data::h5::write_attr_string(file, fmt::kAttrChecksum, result.checksum);
  data::h5::write_attr_string(file, fmt::kAttrChecksumAlgorithm, fmt::kChecksumAlgorithm);
}

}  // namespace

PrepResult prepare_dataset(const PrepOptions& opts) {
  const auto t0 = Clock::now();
  validate(opts);
  VIT_USER_CHECK(!opts.output.empty(), "--output is required (the .h5 file to write)");
  refuse_output_inside_input(opts);
  const std::string temp_path = check_output(opts);
  PrepResult result;
  result.stale_removed = remove_stale_temporaries(opts);
  InputSet input(opts.inputs);
  const InputManifest manifest = input.scan(opts.splits, opts.classes);
  check_free_space(opts, manifest);
  result.class_names = manifest.class_names;

  data::h5::quiet_hdf5_errors();
  TempOutput out(temp_path, opts.output);
  {
    H5Handle fcpl = object_create_plist(H5P_FILE_CREATE);
    const hid_t f = H5Fcreate(temp_path.c_str(), H5F_ACC_EXCL, fcpl.get(), H5P_DEFAULT);
    if (f < 0) {
      throw UserError(str_cat(opts.output, ": cannot write: ", data::h5::short_reason(data::h5::last_error_text())));
    }
    out.file = H5Handle(f);
  }
  try {
    write_contents(out.file.get(), opts, input, manifest, result);
  } catch (const UserError&) {
    out.discard();
    throw;
  } catch (const Error& e) {
    // HDF5 could not write (a full disk, a file-size limit, an I/O error).
    out.discard();
    throw UserError(write_failure(opts, e.what()));
  }

  if (opts.cancel && opts.cancel->load()) throw UserError(str_cat(opts.output, ": interrupted, nothing written"));
  try {
    out.commit();
  } catch (const UserError&) {
    throw;
  } catch (const Error& e) {
    throw UserError(write_failure(opts, e.what()));
  }
  std::error_code ec;
  result.file_bytes = fs::file_size(opts.output, ec);
  result.seconds = seconds_since(t0);
  return result;
}

std::string summary_line(const PrepOptions& opts, const PrepResult& r) {
  std::string counts;
  int64_t total = 0;
  for (const auto& [name, n] : r.split_counts) {
    counts += str_cat(counts.empty() ? "" : ", ", name, " ", n);
    total += n;
  }
  char size[64];
  std::snprintf(size, sizeof size, "%.1f MB", r.file_bytes / 1e6);
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.2f s", r.seconds);
  return str_cat("vit_data_prep: wrote ", opts.output, ": ", counts, " (", total, " images, ", r.class_names.size(),
                 " classes), ", opts.image_size, " px ", opts.storage, ", ", size, ", ", secs, ", checksum ",
                 r.checksum);
}

}  // namespace vit::data_prep
