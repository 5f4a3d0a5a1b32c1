// vit_data_prep's work, as a library call (main.cpp parses the command line;
// the tests call prepare_dataset directly).
//
// Per split, images go through decode (TurboJPEG, strict) -> antialiased
// resize to S x S -> (for --storage jpeg) re-encode at quality 95, in blocks:
// the images of a block are processed on all cores (OpenMP), then the block
// is written by the calling thread alone (HDF5 is not thread-safe). Results
// and errors are kept per image and taken in file order, so the output and
// the reported error do not depend on thread count or timing.
//
// Byte-identical output for the same input: object time stamps are off on the
// file, groups and datasets; chunking is fixed (one image per chunk); all
// attributes are written in a fixed order at the end.
//
// Nothing half-written is ever left: the file is written as
// <dir>/.<name>.tmp-<host>-<pid> in the output's folder and renamed over the
// output only when complete; any failure (a full disk included, or a cancel
// request) removes it. A temporary of the same output left by a run that was
// killed (its pid no longer runs on this host; also the older name
// .<name>.tmp-<pid>) is removed by the next run, which says so.
//
// Refused before any image is decoded: an output inside the input folder
// (it would be read back as input), an output that exists (without
// overwrite), a folder that is missing or not writable, and, for raw
// storage, a disk without room for the file. Refused while decoding: an
// image above kMaxSourcePixels (named, before its pixels are allocated).
// Images far from the output size (upscaled more than 4x or shrunk more
// than 32x along a side) are written, with a note naming them.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace vit::data_prep {

// The largest source image accepted, in pixels (width x height): 100
// megapixels, 300 MB once decoded to RGB (per worker thread). Larger files
// are refused with their name rather than exhausting memory.
constexpr int64_t kMaxSourcePixels = 100'000'000;

struct PrepOptions {
  std::vector<std::string> inputs;  // one folder, or one or more .zip files
  std::string output;               // the .h5 file to write
  int image_size = 224;
  std::string storage = "raw";      // "raw" | "jpeg"
  std::vector<std::string> classes;  // label order; empty: alphabetical
  std::vector<std::string> splits = {"train", "validation", "test"};
  bool overwrite = false;
  int threads = 0;         // 0: all cores
  bool progress = false;   // draw a progress bar on stderr
  const std::atomic<bool>* cancel = nullptr;  // set (e.g. by SIGINT) to stop and clean up
  // Receives notes for the user (a stale temporary removed, images far from
  // the output size), one line each without a prefix; nullptr drops them.
  std::function<void(const std::string&)> note;
};

struct PrepResult {
  std::vector<std::string> class_names;
  std::vector<std::pair<std::string, int64_t>> split_counts;
  std::string checksum;
  uint64_t file_bytes = 0;
  double seconds = 0;
  int64_t images_far_from_size = 0;  // images noted as far from the output size
  std::vector<std::string> stale_removed;  // stale temporaries removed before writing
};

// Writes the HDF5 file. Throws vit::UserError (bad input, output exists,
// unwritable output, a full disk) naming the file; nothing is left at the
// output path or beside it on any failure.
PrepResult prepare_dataset(const PrepOptions& opts);

// One line: counts per split, classes, size, storage, time, file size.
std::string summary_line(const PrepOptions& opts, const PrepResult& r);

}  // namespace vit::data_prep
