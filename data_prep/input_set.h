// The images vit_data_prep reads: one folder or one or more zip archives, each
// laid out as <split>/<class>/<image> (the published Beans archives are
// train.zip, validation.zip, test.zip holding train/<class>/*.jpg, ...).
//
// scan() turns the input into a manifest: per asked-for split, the images in
// the order they will be stored (class by class in label order, file names
// sorted byte-wise within a class), so the same input always gives the same
// file. Every problem a user can cause is a vit::UserError naming the path:
// a missing or empty folder, a stray file, a class missing from a split, a
// class not in --classes. read() fetches one image's bytes; it is safe to
// call from several threads (a zip_t is not thread-safe, so each archive
// has its own lock; folder reads need none).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

struct zip;

namespace vit::data_prep {

struct ImageEntry {
  std::string rel_path;  // "<split>/<class>/<name>", stored in the file's `files`
  int64_t label = 0;
  int archive = -1;          // index into the archives, -1 for a folder input
  uint64_t zip_index = 0;    // entry index inside the archive
};

struct SplitManifest {
  std::string name;
  std::vector<ImageEntry> images;
};

struct InputManifest {
  std::vector<std::string> class_names;  // label order
  std::vector<SplitManifest> splits;     // in the order asked for
};

class InputSet {
 public:
  // `inputs`: exactly one folder, or one or more .zip files.
  explicit InputSet(const std::vector<std::string>& inputs);
  ~InputSet();
  InputSet(const InputSet&) = delete;
  InputSet& operator=(const InputSet&) = delete;

  // `classes` empty: alphabetical order of the class folders found.
  InputManifest scan(const std::vector<std::string>& splits, const std::vector<std::string>& classes) const;

  // The bytes of one image. Thread-safe. UserError naming the file on failure.
  void read(const ImageEntry& e, std::vector<uint8_t>* bytes) const;

  // How to name an image in a message: the file path, or "archive.zip:entry".
  std::string describe(const ImageEntry& e) const;

  // The input as given, joined by ", " (stored as the file's `source`).
  std::string source() const;

 private:
  InputManifest scan_unchecked(const std::vector<std::string>& splits, const std::vector<std::string>& classes) const;

  struct Archive {
    std::string path;
    struct zip* handle = nullptr;
    std::unique_ptr<std::mutex> lock;
  };
  std::vector<std::string> inputs_;
  std::string folder_;            // set for a folder input
  std::vector<Archive> archives_;  // set for zip input
};

}  // namespace vit::data_prep
