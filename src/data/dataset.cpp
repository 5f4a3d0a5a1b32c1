// Hdf5Dataset: attribute checks at open, locked reads (see dataset.h).
#include "data/dataset.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "core/error.h"
#include "data/format.h"
#include "data/hdf5_util.h"
#include "data/jpeg_codec.h"

namespace vit::data {

namespace fmt = format;
using h5::check_status;
using h5::checked;
using h5::H5Handle;

struct Hdf5Dataset::Impl {
  struct Split {
    std::string name;
    H5Handle group, images, files;
    H5Handle file_space;   // scratch dataspace of `images`, reselected per read (under the lock)
    H5Handle mem_space;    // one image: (1, S, S, 3) raw or (1) jpeg
    std::vector<int64_t> labels;
    std::vector<uint64_t> digests;  // per image (format.h); empty in files written before they existed
  };
  DatasetInfo info;
  H5Handle file;
  H5Handle vlen_u8, vlen_str;
  std::vector<std::unique_ptr<Split>> splits;

  ~Impl() {
    std::lock_guard<std::mutex> lock(h5::hdf5_mutex());
    splits.clear();
    vlen_u8.reset();
    vlen_str.reset();
    file.reset();
  }

  Split& split(const std::string& name) const {
    for (const auto& s : splits) {
      if (s->name == name) return *s;
    }
    info.count(name);  // throws the UserError that lists the splits
    VIT_THROW("unreachable");
  }
  void check_index(const Split& s, int64_t index) const {
    VIT_CHECK(index >= 0 && index < static_cast<int64_t>(s.labels.size()), info.path, ": index ", index,
              " out of range for split ", s.name, " (", s.labels.size(), " images)");
  }
};

bool DatasetInfo::has_split(const std::string& split) const {
  return std::any_of(splits.begin(), splits.end(), [&](const SplitInfo& s) { return s.name == split; });
}

int64_t DatasetInfo::count(const std::string& split) const {
  for (const auto& s : splits) {
    if (s.name == split) return s.count;
  }
  std::string have;
  for (const auto& s : splits) have += (have.empty() ? "" : ", ") + s.name;
  throw UserError(str_cat(path, ": has no split '", split, "' (it has: ", have,
                          "; re-run vit_data_prep with --splits including ", split, ")"));
}

namespace {

namespace fs = std::filesystem;

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".jpg" || ext == ".jpeg";
}

// True when `dir` holds JPEG files within three levels (<split>/<class>/<image>).
// Looks at a bounded number of entries: a cheap guess for a message.
bool holds_images(const fs::path& dir) {
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
  for (int seen = 0; !ec && it != end && seen < 20000; it.increment(ec), ++seen) {
    if (it.depth() > 2) {
      it.disable_recursion_pending();
      continue;
    }
    if (is_image_file(it->path())) return true;
  }
  return false;
}

// The vit_data_prep command that packs the images in `folder` (`image_size`
// 0: the tool's default size).
std::string prep_command(const std::string& folder, int image_size) {
  fs::path p = fs::path(folder).lexically_normal();
  std::string base = p.filename().string();
  if (base.empty() || base == ".") base = p.parent_path().filename().string();
  if (base.empty() || base == "." || base == "..") base = "images";
  const std::string size = image_size > 0 ? str_cat("_", image_size) : "";
  return str_cat("vit_data_prep --input ", folder, " --output data/", base, size, ".h5",
                 image_size > 0 ? str_cat(" --image-size ", image_size) : "");
}

// An HDF5 read failed inside a file that opened fine: the file is damaged (or
// the disk is failing). `e` carries HDF5's reason.
[[noreturn]] void unreadable(const std::string& path, const std::string& split, int64_t index, const Error& e) {
  std::string reason = e.what();
  const size_t at = reason.find("failed: ");
  if (at != std::string::npos) reason = reason.substr(at + 8);
  throw UserError(str_cat(path, ": /", split, "/images[", index, "] cannot be read (", h5::short_reason(reason),
                          "): the file is damaged or unreadable; re-create it with vit_data_prep"));
}

}  // namespace

Hdf5Dataset Hdf5Dataset::open(const std::string& path, int image_size_hint) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (holds_images(path)) {
      throw UserError(str_cat(path, ": is a folder of images, not an HDF5 file: pack it once with `",
                              prep_command(path, image_size_hint), "` and use the .h5 file it writes"));
    }
    throw UserError(str_cat(path, ": is a folder, not an HDF5 file (expected the .h5 file vit_data_prep writes)"));
  }
  VIT_USER_CHECK(fs::is_regular_file(path, ec), path, ": no such file (make it with vit_data_prep --input <images> --output ",
                 path, image_size_hint > 0 ? str_cat(" --image-size ", image_size_hint) : "", ")");
  auto impl = std::make_shared<Impl>();
  DatasetInfo& info = impl->info;
  info.path = path;

  std::lock_guard<std::mutex> lock(h5::hdf5_mutex());
  h5::quiet_hdf5_errors();
  VIT_USER_CHECK(H5Fis_hdf5(path.c_str()) > 0, path, ": not an HDF5 file (make it with vit_data_prep)");
  {
    H5Handle fapl = checked(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate");
    // Shared read locks where the file system has them; no failure where it has not (NFS, Lustre).
    check_status(H5Pset_file_locking(fapl.get(), true, true), "H5Pset_file_locking");
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
    if (f < 0) throw UserError(str_cat(path, ": cannot open: ", h5::last_error_text()));
    impl->file = H5Handle(f);
  }
  const hid_t root = impl->file.get();
  for (const char* a : {fmt::kAttrFormatVersion, fmt::kAttrClassNames, fmt::kAttrImageSize, fmt::kAttrStorage,
                        fmt::kAttrChecksum}) {
    VIT_USER_CHECK(h5::has_attr(root, a), path, ": not a vit_data_prep file (no root attribute ", a,
                   "); re-create it with vit_data_prep");
  }
  info.format_version = h5::read_attr_int64(root, fmt::kAttrFormatVersion);
  VIT_USER_CHECK(info.format_version == fmt::kFormatVersion, path, ": format_version is ", info.format_version,
                 " but this build reads ", fmt::kFormatVersion, " (re-create it with this build's vit_data_prep)");
  info.class_names = h5::read_attr_strings(root, fmt::kAttrClassNames);
  info.image_size = static_cast<int>(h5::read_attr_int64(root, fmt::kAttrImageSize));
  info.storage = h5::read_attr_string(root, fmt::kAttrStorage);
  info.content_checksum = h5::read_attr_string(root, fmt::kAttrChecksum);
  if (h5::has_attr(root, fmt::kAttrSource)) info.source = h5::read_attr_string(root, fmt::kAttrSource);
  VIT_USER_CHECK(!info.class_names.empty(), path, ": class_names is empty");
  VIT_USER_CHECK(info.image_size > 0, path, ": image_size is ", info.image_size);
  VIT_USER_CHECK(info.storage == fmt::kStorageRaw || info.storage == fmt::kStorageJpeg, path, ": storage is '",
                 info.storage, "' (known: raw, jpeg)");
  const bool jpeg = info.storage == fmt::kStorageJpeg;
  const hsize_t S = info.image_size;

  impl->vlen_u8 = checked(H5Tvlen_create(H5T_NATIVE_UINT8), "H5Tvlen_create");
  impl->vlen_str = h5::vlen_string_type();

  // Splits: in the order written (the checksum folds them in that order).
  VIT_USER_CHECK(h5::has_attr(root, fmt::kAttrSplits), path, ": not a vit_data_prep file (no root attribute ",
                 fmt::kAttrSplits, ")");
  const std::vector<std::string> names = h5::read_attr_strings(root, fmt::kAttrSplits);
  for (const std::string& name : names) {
    VIT_USER_CHECK(H5Lexists(root, name.c_str(), H5P_DEFAULT) > 0, path, ": split '", name,
                   "' is listed in the splits attribute but has no group");
    auto s = std::make_unique<Impl::Split>();
    s->name = name;
    s->group = checked(H5Gopen2(root, name.c_str(), H5P_DEFAULT), "open group " + name);
    const hid_t g = s->group.get();
    const std::string where = str_cat(path, ": /", name);
    for (const char* d : {fmt::kImages, fmt::kLabels, fmt::kFiles}) {
      VIT_USER_CHECK(H5Lexists(g, d, H5P_DEFAULT) > 0, where, " has no dataset '", d, "'");
    }
    VIT_USER_CHECK(h5::has_attr(g, fmt::kAttrCount), where, " has no attribute count");
    const int64_t n = h5::read_attr_int64(g, fmt::kAttrCount);

    H5Handle labels = checked(H5Dopen2(g, fmt::kLabels, H5P_DEFAULT), "open labels");
    {
      H5Handle space = checked(H5Dget_space(labels.get()), "H5Dget_space");
      VIT_USER_CHECK(H5Sget_simple_extent_npoints(space.get()) == n, where, "/labels holds ",
                     H5Sget_simple_extent_npoints(space.get()), " values but count is ", n);
    }
    s->labels.resize(n);
    check_status(H5Dread(labels.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->labels.data()),
                 "read labels");
    for (int64_t i = 0; i < n; ++i) {
      VIT_USER_CHECK(s->labels[i] >= 0 && s->labels[i] < info.num_classes(), where, "/labels[", i, "] is ",
                     s->labels[i], ", outside 0..", info.num_classes() - 1);
    }

    // Random single-image reads: a chunk cache would only copy twice.
    H5Handle dapl = checked(H5Pcreate(H5P_DATASET_ACCESS), "H5Pcreate");
    check_status(H5Pset_chunk_cache(dapl.get(), 0, 0, 1.0), "H5Pset_chunk_cache");
    s->images = checked(H5Dopen2(g, fmt::kImages, dapl.get()), "open images");
    s->file_space = checked(H5Dget_space(s->images.get()), "H5Dget_space");
    H5Handle type = checked(H5Dget_type(s->images.get()), "H5Dget_type");
    if (jpeg) {
      VIT_USER_CHECK(H5Tget_class(type.get()) == H5T_VLEN, where, "/images is not variable-length JPEG bytes");
      VIT_USER_CHECK(H5Sget_simple_extent_npoints(s->file_space.get()) == n, where, "/images holds ",
                     H5Sget_simple_extent_npoints(s->file_space.get()), " entries but count is ", n);
      const hsize_t one = 1;
      s->mem_space = checked(H5Screate_simple(1, &one, nullptr), "H5Screate_simple");
    } else {
      hsize_t dims[4] = {0, 0, 0, 0};
      const int rank = H5Sget_simple_extent_ndims(s->file_space.get());
      VIT_USER_CHECK(rank == 4, where, "/images has rank ", rank, ", expected (N, S, S, 3)");
      H5Sget_simple_extent_dims(s->file_space.get(), dims, nullptr);
      VIT_USER_CHECK(dims[0] == static_cast<hsize_t>(n) && dims[1] == S && dims[2] == S && dims[3] == 3, where,
                     "/images is (", dims[0], ", ", dims[1], ", ", dims[2], ", ", dims[3], "), expected (", n, ", ",
                     S, ", ", S, ", 3)");
      VIT_USER_CHECK(H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_size(type.get()) == 1, where,
                     "/images is not uint8");
      const hsize_t one[4] = {1, S, S, 3};
      s->mem_space = checked(H5Screate_simple(4, one, nullptr), "H5Screate_simple");
    }
    s->files = checked(H5Dopen2(g, fmt::kFiles, H5P_DEFAULT), "open files");
    if (H5Lexists(g, fmt::kDigests, H5P_DEFAULT) > 0) {
      H5Handle digests = checked(H5Dopen2(g, fmt::kDigests, H5P_DEFAULT), "open digests");
      H5Handle space = checked(H5Dget_space(digests.get()), "H5Dget_space");
      VIT_USER_CHECK(H5Sget_simple_extent_npoints(space.get()) == n, where, "/digests holds ",
                     H5Sget_simple_extent_npoints(space.get()), " values but count is ", n,
                     " (the file is damaged; re-create it with vit_data_prep)");
      s->digests.resize(n);
      check_status(H5Dread(digests.get(), H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->digests.data()),
                   "read digests");
    }
    info.splits.push_back({name, n});
    impl->splits.push_back(std::move(s));
  }
  VIT_USER_CHECK(!impl->splits.empty(), path, ": holds no splits");
  // Per-image digests come with every split of a file, or with none (older files).
  const auto has_digests = [](const auto& s) { return !s->digests.empty(); };
  const auto non_empty = [](const auto& s) { return !s->labels.empty(); };
  for (const auto& s : impl->splits) {
    const bool others_have = std::any_of(impl->splits.begin(), impl->splits.end(), has_digests);
    VIT_USER_CHECK(!others_have || !non_empty(s) || has_digests(s), path, ": /", s->name,
                   " has no per-image digests while other splits have them (the file is damaged; re-create it "
                   "with vit_data_prep)");
  }
  info.image_digests = std::any_of(impl->splits.begin(), impl->splits.end(), has_digests);
  Hdf5Dataset ds;
  ds.impl_ = std::move(impl);
  return ds;
}

const DatasetInfo& Hdf5Dataset::info() const {
  VIT_CHECK(impl_ != nullptr, "Hdf5Dataset used before open()");
  return impl_->info;
}

void Hdf5Dataset::check_matches(int image_size, int num_classes) const {
  const DatasetInfo& i = info();
  VIT_USER_CHECK(i.image_size == image_size, i.path, ": image_size is ", i.image_size, " but model.image_size is ",
                 image_size, " (re-run vit_data_prep --image-size ", image_size, ")");
  std::string names;
  for (const auto& c : i.class_names) names += (names.empty() ? "" : ", ") + c;
  VIT_USER_CHECK(i.num_classes() == num_classes, i.path, ": has ", i.num_classes(), " classes (", names,
                 ") but model.num_classes is ", num_classes, " (set model.num_classes: ", i.num_classes(), ")");
}

const std::vector<int64_t>& Hdf5Dataset::labels(const std::string& split) const {
  return impl_->split(split).labels;
}

int64_t Hdf5Dataset::label(const std::string& split, int64_t index) const {
  const auto& s = impl_->split(split);
  impl_->check_index(s, index);
  return s.labels[index];
}

std::string Hdf5Dataset::file(const std::string& split, int64_t index) const {
  const auto& s = impl_->split(split);
  impl_->check_index(s, index);
  std::lock_guard<std::mutex> lock(h5::hdf5_mutex());
  h5::quiet_hdf5_errors();
  H5Handle fspace = checked(H5Dget_space(s.files.get()), "H5Dget_space");
  const hsize_t start = index, count = 1;
  check_status(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr), "select file");
  H5Handle mspace = checked(H5Screate_simple(1, &count, nullptr), "H5Screate_simple");
  char* p = nullptr;
  check_status(H5Dread(s.files.get(), impl_->vlen_str.get(), mspace.get(), fspace.get(), H5P_DEFAULT, &p),
               "read files");
  std::string out = p ? p : "";
  H5Dvlen_reclaim(impl_->vlen_str.get(), mspace.get(), H5P_DEFAULT, &p);
  return out;
}

namespace {

// Reads the stored JPEG bytes of one image (the caller holds the HDF5 lock).
void read_jpeg_bytes_locked(hid_t images, hid_t file_space, hid_t mem_space, hid_t vlen_type, int64_t index,
                            std::vector<uint8_t>* bytes) {
  const hsize_t start = index, count = 1;
  check_status(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &start, nullptr, &count, nullptr), "select image");
  hvl_t vl{0, nullptr};
  check_status(H5Dread(images, vlen_type, mem_space, file_space, H5P_DEFAULT, &vl), "read image");
  const auto* p = static_cast<const uint8_t*>(vl.p);
  bytes->assign(p, p + vl.len);
  H5Dvlen_reclaim(vlen_type, mem_space, H5P_DEFAULT, &vl);
}

void read_raw_locked(hid_t images, hid_t file_space, hid_t mem_space, int S, int64_t index, uint8_t* out) {
  const hsize_t start[4] = {static_cast<hsize_t>(index), 0, 0, 0};
  const hsize_t count[4] = {1, static_cast<hsize_t>(S), static_cast<hsize_t>(S), 3};
  check_status(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start, nullptr, count, nullptr), "select image");
  check_status(H5Dread(images, H5T_NATIVE_UINT8, mem_space, file_space, H5P_DEFAULT, out), "read image");
}

}  // namespace

void Hdf5Dataset::read_image(const std::string& split, int64_t index, uint8_t* out, JpegCodec* codec) const {
  const Impl& impl = *impl_;
  const auto& s = impl.split(split);
  impl.check_index(s, index);
  const int S = impl.info.image_size;
  if (impl.info.storage == fmt::kStorageRaw) {
    std::lock_guard<std::mutex> lock(h5::hdf5_mutex());
    h5::quiet_hdf5_errors();
    try {
      read_raw_locked(s.images.get(), s.file_space.get(), s.mem_space.get(), S, index, out);
    } catch (const UserError&) {
      throw;
    } catch (const Error& e) {
      unreadable(impl.info.path, split, index, e);
    }
    return;
  }
  thread_local std::vector<uint8_t> bytes;
  {
    std::lock_guard<std::mutex> lock(h5::hdf5_mutex());
    h5::quiet_hdf5_errors();
    try {
      read_jpeg_bytes_locked(s.images.get(), s.file_space.get(), s.mem_space.get(), impl.vlen_u8.get(), index,
                             &bytes);
    } catch (const UserError&) {
      throw;
    } catch (const Error& e) {
      unreadable(impl.info.path, split, index, e);
    }
  }
  JpegCodec local;
  JpegCodec* c = codec ? codec : &local;
  int w = 0, h = 0;
  std::string why;
  VIT_USER_CHECK(c->header(bytes.data(), bytes.size(), &w, &h, &why) && w == S && h == S, impl.info.path, ": /",
                 split, "/images[", index, "] is not a ", S, "x", S, " JPEG (", why.empty() ? "wrong size" : why, ")");
  VIT_USER_CHECK(c->decode_rgb_into(bytes.data(), bytes.size(), out, S, S, &why), impl.info.path, ": /", split,
                 "/images[", index, "]: corrupt JPEG (", why, ")");
}

void Hdf5Dataset::verify_checksum(int part, int parts) const {
  VIT_CHECK(parts >= 1 && part >= 0 && part < parts, "verify_checksum part ", part, " of ", parts);
  const Impl& impl = *impl_;
  const DatasetInfo& info = impl.info;
  if (!info.image_digests && part != 0) return;  // an older file is checked whole, by part 0
  const int S = info.image_size;
  const size_t image_bytes = static_cast<size_t>(S) * S * 3;
  const bool raw = info.storage == fmt::kStorageRaw;
  std::vector<uint8_t> pixels(raw ? image_bytes : 0), bytes;

  // The digest of image i of split s as stored now.
  auto digest_of = [&](const Impl::Split& s, int64_t i) {
    std::lock_guard<std::mutex> lock(h5::hdf5_mutex());
    h5::quiet_hdf5_errors();
    try {
      if (raw) {
        read_raw_locked(s.images.get(), s.file_space.get(), s.mem_space.get(), S, i, pixels.data());
        return fmt::image_digest(s.labels[i], pixels.data(), image_bytes);
      }
      read_jpeg_bytes_locked(s.images.get(), s.file_space.get(), s.mem_space.get(), impl.vlen_u8.get(), i, &bytes);
      return fmt::image_digest(s.labels[i], bytes.data(), bytes.size());
    } catch (const UserError&) {
      throw;
    } catch (const Error& e) {
      unreadable(info.path, s.name, i, e);
    }
  };

  if (!info.image_digests) {
    // Written before per-image digests existed: only the whole-file sum can be compared.
    uint64_t h = fmt::kFnvOffset;
    for (const auto& s : impl.splits) {
      const int64_t n = static_cast<int64_t>(s->labels.size());
      std::vector<uint64_t> digests(n);
      for (int64_t i = 0; i < n; ++i) digests[i] = digest_of(*s, i);
      h = fmt::fold_split(h, s->name, digests.data(), n);
    }
    const std::string got = fmt::checksum_hex(h);
    VIT_USER_CHECK(got == info.content_checksum, info.path, ": damaged: its content checksum is ", got,
                   " but the file records ", info.content_checksum,
                   " (the file was written by an older vit_data_prep that records no per-image checksums, so the "
                   "damaged image cannot be named); re-create it with vit_data_prep");
    return;
  }

  // The recorded digests must add up to the recorded file checksum...
  uint64_t h = fmt::kFnvOffset;
  for (const auto& s : impl.splits) {
    h = fmt::fold_split(h, s->name, s->digests.data(), static_cast<int64_t>(s->digests.size()));
  }
  VIT_USER_CHECK(fmt::checksum_hex(h) == info.content_checksum, info.path,
                 ": damaged: its per-image digests do not add up to its content_checksum ", info.content_checksum,
                 " (the checksum records themselves changed); re-create it with vit_data_prep");

  // ... and every image (this part's share) must match its digest.
  struct Mismatch {
    std::string split;
    int64_t index;
  };
  std::vector<Mismatch> bad;
  int64_t bad_count = 0;
  for (const auto& s : impl.splits) {
    const int64_t n = static_cast<int64_t>(s->labels.size());
    for (int64_t i = part; i < n; i += parts) {
      if (digest_of(*s, i) == s->digests[i]) continue;
      if (bad.size() < 3) bad.push_back({s->name, i});
      ++bad_count;
    }
  }
  if (bad.empty()) return;
  std::string which;
  for (const Mismatch& m : bad) {
    const std::string file = this->file(m.split, m.index);
    which += str_cat(which.empty() ? "" : ", ", "image ", m.index, " of split '", m.split, "'",
                     file.empty() ? "" : str_cat(" (", file, ")"));
  }
  if (bad_count > static_cast<int64_t>(bad.size())) {
    which += str_cat(" and ", bad_count - static_cast<int64_t>(bad.size()), " more",
                     parts > 1 ? " among the images checked here" : "");
  }
  throw UserError(str_cat(info.path, ": damaged: ", which, bad_count == 1 ? " does" : " do",
                          " not match the checksum vit_data_prep recorded (pixels or label changed since); "
                          "re-create the file with vit_data_prep"));
}

}  // namespace vit::data
