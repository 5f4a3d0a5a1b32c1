// Read-only access to a vit_data_prep HDF5 file (layout: src/data/format.h).
//
// Every rank opens the same file read-only (HDF5 file locking is used where
// the file system supports it and ignored where it does not). open() reads
// the attributes and every split's labels into memory; images and file
// names are read on demand. The serial HDF5 library is not thread-safe:
// every read takes the process-wide h5::hdf5_mutex(), so a Hdf5Dataset may be
// shared by the loader's worker threads. JPEG decoding (storage "jpeg")
// happens outside that lock.
//
// Hdf5Dataset is a cheap handle (shared ownership): copies refer to the same
// open file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace vit::data {

class JpegCodec;

struct SplitInfo {
  std::string name;
  int64_t count = 0;
};

struct DatasetInfo {
  std::string path;
  std::vector<std::string> class_names;  // label order
  int image_size = 0;                    // S: images are (S, S, 3) uint8
  std::string storage;                   // "raw" | "jpeg"
  std::string source;                    // the input vit_data_prep read
  std::string content_checksum;          // 16 hex digits (format.h)
  int64_t format_version = 0;
  std::vector<SplitInfo> splits;         // in file order
  bool image_digests = false;            // per-image digests recorded (format.h): damage can be located

  bool has_split(const std::string& split) const;
  // UserError naming the file and the splits it has when `split` is absent.
  int64_t count(const std::string& split) const;
  int num_classes() const { return static_cast<int>(class_names.size()); }
};

class Hdf5Dataset {
 public:
  // Opens read-only. UserError naming the file when it is missing, a folder
  // (a folder of images gets the vit_data_prep command that packs it; with
  // `image_size_hint` > 0 the command asks for that size), not HDF5, or not
  // a vit_data_prep file of a known format_version.
  static Hdf5Dataset open(const std::string& path, int image_size_hint = 0);

  const DatasetInfo& info() const;
  const std::string& path() const { return info().path; }

  // UserError when the file does not fit the model, e.g.
  // "data/x.h5: image_size is 96 but model.image_size is 224 (re-run vit_data_prep --image-size 224)".
  void check_matches(int image_size, int num_classes) const;

  int64_t size(const std::string& split) const { return info().count(split); }
  int64_t label(const std::string& split, int64_t index) const;
  const std::vector<int64_t>& labels(const std::string& split) const;  // (N)
  std::string file(const std::string& split, int64_t index) const;

  // Image `index` of `split` as (S, S, 3) uint8 into `out`. Thread-safe.
  // `codec` (storage "jpeg" only) is the caller's decoder, one per thread;
  // nullptr uses a temporary one.
  void read_image(const std::string& split, int64_t index, uint8_t* out, JpegCodec* codec = nullptr) const;

  // Recomputes the digest of every stored image and its label and compares
  // with what the file records. UserError on a mismatch, naming the file, the
  // split, the image index and its source file (files with per-image
  // digests), or saying the file is damaged (older files that record only
  // the whole-file checksum). Reads every image once.
  //
  // Several readers of one file may share the work: part `part` of `parts`
  // checks the images i with i % parts == part of every split; the recorded
  // digests are checked against content_checksum by every part, so the parts
  // together check the whole file. An older file without per-image digests
  // can only be checked whole: part 0 does it, the other parts return.
  void verify_checksum(int part = 0, int parts = 1) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace vit::data
