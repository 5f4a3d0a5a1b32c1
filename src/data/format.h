// The HDF5 image file written by vit_data_prep and read by Hdf5Dataset.
//
// One header holds every name and the checksum rule so that the writer
// (data_prep/) and the reader (src/data/) cannot drift apart. Layout
// (DESIGN.md section 4), format_version 1:
//
//   /                 attributes: class_names (string array, label order),
//                     image_size (int64), storage ("raw" | "jpeg"),
//                     source (the input path(s) as given), content_checksum
//                     (16 hex digits, see below), checksum_algorithm,
//                     format_version (int64), layout ("NHWC uint8 RGB"),
//                     splits (string array: the split groups in the order
//                     written, which the checksum follows)
//   /<split>/         attribute count (int64); split = train, validation, test, ...
//     images          raw:  uint8 (N, S, S, 3), chunked (1, S, S, 3): one chunk
//                           per image, so a random read touches one chunk
//                     jpeg: variable-length uint8 (N): the JPEG bytes of the
//                           already resized image (quality 95, 4:4:4)
//     labels          int64 (N)
//     files           variable-length UTF-8 strings (N): "<split>/<class>/<name>"
//     digests         uint64 (N): every image's digest (below), in file order,
//                     so that a damaged image can be named. Optional: files
//                     written before it existed are still read, and verified
//                     by the whole-file content_checksum alone.
//
// Images are stored class by class (label order), file names sorted within a
// class; the sampler shuffles, so the file order only has to be reproducible.
//
// content_checksum: 64-bit FNV-1a, two levels so that it can be computed in
// parallel and still be one number for the file:
//   image digest   = FNV-1a(label as int64 little-endian, then the stored
//                    payload: the S*S*3 pixels, or the JPEG bytes)
//   file checksum  = FNV-1a over, per split in file order: the split name,
//                    a 0 byte, the count (int64 LE), then every image digest
//                    (uint64 LE) in file order.
// It covers what the trainer consumes (labels and stored pixels), not the
// HDF5 bytes: two files with different chunking but the same content agree.
// The per-split `digests` are the image digests the file checksum folds, so
// a reader checks each image against its own digest and the digests against
// content_checksum; together that is the whole-file check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace vit::data::format {

constexpr int64_t kFormatVersion = 1;
constexpr const char* kLayout = "NHWC uint8 RGB";
constexpr const char* kChecksumAlgorithm = "fnv1a64 of per-image fnv1a64(label, payload), see src/data/format.h";
constexpr int kJpegQuality = 95;

// Attribute and dataset names.
constexpr const char* kAttrClassNames = "class_names";
constexpr const char* kAttrImageSize = "image_size";
constexpr const char* kAttrStorage = "storage";
constexpr const char* kAttrSource = "source";
constexpr const char* kAttrChecksum = "content_checksum";
constexpr const char* kAttrChecksumAlgorithm = "checksum_algorithm";
constexpr const char* kAttrFormatVersion = "format_version";
constexpr const char* kAttrLayout = "layout";
constexpr const char* kAttrCount = "count";
constexpr const char* kAttrSplits = "splits";
constexpr const char* kImages = "images";
constexpr const char* kLabels = "labels";
constexpr const char* kFiles = "files";
constexpr const char* kDigests = "digests";

constexpr const char* kStorageRaw = "raw";
constexpr const char* kStorageJpeg = "jpeg";

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;
constexpr uint64_t kFnvPrime = 0x100000001b3ull;

inline uint64_t fnv1a(uint64_t h, const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= kFnvPrime;
  }
  return h;
}

inline uint64_t fnv1a_u64(uint64_t h, uint64_t v) {
  unsigned char le[8];
  for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(v >> (8 * i));
  return fnv1a(h, le, 8);
}

// Digest of one stored image: its label, then its stored payload bytes.
inline uint64_t image_digest(int64_t label, const void* payload, size_t bytes) {
  return fnv1a(fnv1a_u64(kFnvOffset, static_cast<uint64_t>(label)), payload, bytes);
}

// Folds one split into the running file checksum (start from kFnvOffset).
inline uint64_t fold_split(uint64_t h, const std::string& split, const uint64_t* digests, int64_t count) {
  h = fnv1a(h, split.data(), split.size() + 1);  // with the terminating 0
  h = fnv1a_u64(h, static_cast<uint64_t>(count));
  for (int64_t i = 0; i < count; ++i) h = fnv1a_u64(h, digests[i]);
  return h;
}

inline std::string checksum_hex(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace vit::data::format
