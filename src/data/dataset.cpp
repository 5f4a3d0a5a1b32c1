// Hdf5Dataset: attribute checks at open, locked reads (see dataset.h).
#include "data/dataset.h"

#include <algorithm>
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

Hdf5Dataset Hdf5Dataset::open(const std::string& path) {
  std::error_code ec;
  VIT_USER_CHECK(std::filesystem::is_regular_file(path, ec), path,
                 ": no such file (make it with vit_data_prep --input <images> --output ", path, ")");
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
    info.splits.push_back({name, n});
    impl->splits.push_back(std::move(s));
  }
  VIT_USER_CHECK(!impl->splits.empty(), path, ": holds no splits");
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
    read_raw_locked(s.images.get(), s.file_space.get(), s.mem_space.get(), S, index, out);
    return;
  }
  thread_local std::vector<uint8_t> bytes;
  {
    std::lock_guard<std::mutex> lock(h5::hdf5_mutex());
    h5::quiet_hdf5_errors();
    read_jpeg_bytes_locked(s.images.get(), s.file_space.get(), s.mem_space.get(), impl.vlen_u8.get(), index, &bytes);
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

void Hdf5Dataset::verify_checksum() const {
  const Impl& impl = *impl_;
  const int S = impl.info.image_size;
  const size_t image_bytes = static_cast<size_t>(S) * S * 3;
  std::vector<uint8_t> buf(image_bytes);
  std::vector<uint8_t> bytes;
  uint64_t h = fmt::kFnvOffset;
  for (const auto& s : impl.splits) {
    const int64_t n = static_cast<int64_t>(s->labels.size());
    std::vector<uint64_t> digests(n);
    std::lock_guard<std::mutex> lock(h5::hdf5_mutex());
    h5::quiet_hdf5_errors();
    for (int64_t i = 0; i < n; ++i) {
      if (impl.info.storage == fmt::kStorageRaw) {
        read_raw_locked(s->images.get(), s->file_space.get(), s->mem_space.get(), S, i, buf.data());
        digests[i] = fmt::image_digest(s->labels[i], buf.data(), image_bytes);
      } else {
        read_jpeg_bytes_locked(s->images.get(), s->file_space.get(), s->mem_space.get(), impl.vlen_u8.get(), i,
                               &bytes);
        digests[i] = fmt::image_digest(s->labels[i], bytes.data(), bytes.size());
      }
    }
    h = fmt::fold_split(h, s->name, digests.data(), n);
  }
  const std::string got = fmt::checksum_hex(h);
  VIT_USER_CHECK(got == impl.info.content_checksum, impl.info.path, ": content checksum is ", got,
                 " but the file records ", impl.info.content_checksum,
                 " (the file is damaged or was altered; re-create it with vit_data_prep)");
}

}  // namespace vit::data
