// vit_data_prep's pipeline: scan, decode + resize (+ encode) in parallel blocks,
// write HDF5 serially, rename into place. See prep.h for the guarantees.
#include "data_prep/prep.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
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
    if (committed_) return;
    file.close();
    std::error_code ec;
    fs::remove(temp_, ec);
  }
  const std::string& temp_path() const { return temp_; }
  // Closes (flushes) the file and renames it over the final path.
  void commit() {
    if (!file.close()) throw UserError(str_cat(final_, ": cannot finish writing: ", data::h5::last_error_text()));
    if (std::rename(temp_.c_str(), final_.c_str()) != 0) {
      throw UserError(str_cat(final_, ": cannot rename ", temp_, " into place: ", std::strerror(errno)));
    }
    committed_ = true;
  }
  H5Handle file;

 private:
  std::string temp_, final_;
  bool committed_ = false;
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
  return (dir / ("." + out.filename().string() + ".tmp-" + std::to_string(getpid()))).string();
}

}  // namespace

PrepResult prepare_dataset(const PrepOptions& opts) {
  const auto t0 = Clock::now();
  validate(opts);
  const std::string temp_path = check_output(opts);
  InputSet input(opts.inputs);
  const InputManifest manifest = input.scan(opts.splits, opts.classes);

  const int S = opts.image_size;
  const size_t image_bytes = static_cast<size_t>(S) * S * 3;
  const bool jpeg = opts.storage == fmt::kStorageJpeg;
  const int threads = opts.threads > 0 ? opts.threads : omp_get_max_threads();
  const int64_t block = std::max<int64_t>(64, 8 * threads);

  data::h5::quiet_hdf5_errors();
  TempOutput out(temp_path, opts.output);
  {
    H5Handle fcpl = object_create_plist(H5P_FILE_CREATE);
    const hid_t f = H5Fcreate(temp_path.c_str(), H5F_ACC_EXCL, fcpl.get(), H5P_DEFAULT);
    if (f < 0) throw UserError(str_cat(opts.output, ": cannot write: ", data::h5::last_error_text()));
    out.file = H5Handle(f);
  }

  std::vector<WorkerState> workers(threads);
  PrepResult result;
  result.class_names = manifest.class_names;
  uint64_t checksum = fmt::kFnvOffset;

  for (const SplitManifest& split : manifest.splits) {
    const int64_t N = static_cast<int64_t>(split.images.size());
    H5Handle gcpl = object_create_plist(H5P_GROUP_CREATE);
    H5Handle group = checked(H5Gcreate2(out.file.get(), split.name.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT),
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
    std::vector<std::string> errors(std::min(block, N));
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
        try {
          input.read(e, &w.bytes);
          int width = 0, height = 0;
          std::string why;
          if (!w.codec.decode_rgb(w.bytes.data(), w.bytes.size(), &w.decoded, &width, &height, &why)) {
            errors[j] = str_cat(input.describe(e), ": not a decodable JPEG image (", why, ")");
          } else {
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
    checksum = fmt::fold_split(checksum, split.name, digests.data(), N);
    result.split_counts.emplace_back(split.name, N);
  }

  const hid_t root = out.file.get();
  data::h5::write_attr_int64(root, fmt::kAttrFormatVersion, fmt::kFormatVersion);
  data::h5::write_attr_string(root, fmt::kAttrLayout, fmt::kLayout);
  data::h5::write_attr_strings(root, fmt::kAttrClassNames, manifest.class_names);
  data::h5::write_attr_int64(root, fmt::kAttrImageSize, S);
  data::h5::write_attr_strings(root, fmt::kAttrSplits, opts.splits);
  data::h5::write_attr_string(root, fmt::kAttrStorage, opts.storage);
  data::h5::write_attr_string(root, fmt::kAttrSource, input.source());
  result.checksum = fmt::checksum_hex(checksum);
  data::h5::write_attr_string(root, fmt::kAttrChecksum, result.checksum);
  data::h5::write_attr_string(root, fmt::kAttrChecksumAlgorithm, fmt::kChecksumAlgorithm);

  if (opts.cancel && opts.cancel->load()) throw UserError(str_cat(opts.output, ": interrupted, nothing written"));
  out.commit();
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
