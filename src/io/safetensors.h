// The safetensors file format (Hugging Face): an 8-byte little-endian header
// length N, N bytes of JSON mapping each tensor name to its dtype, shape and
// [begin, end) byte range in the data that follows, then the data.
//
// Reading checks everything a damaged or foreign file could get wrong and
// names the file and the tensor in its message: the header length against
// the file length, the JSON, each dtype, that each byte range matches its
// shape and lies inside the data, that ranges do not overlap, and that the
// file holds no bytes beyond the last tensor.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace vit::io {

struct SafeTensor {
  std::string dtype;             // "F32", "F16", "BF16", "F64"
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;    // raw little-endian data

  int64_t numel() const;
  // The values converted to fp32 (F32, F16, BF16, F64).
  std::vector<float> to_float() const;
};

struct SafeTensorsFile {
  std::map<std::string, SafeTensor> tensors;
  std::map<std::string, std::string> metadata;  // the optional "__metadata__"
};

// Throws vit::UserError naming `path` on any problem.
SafeTensorsFile read_safetensors(const std::string& path);

// Writes fp32 tensors (name -> shape, values) with optional metadata, to a
// temporary name first and then renamed over `path`.
struct Fp32Tensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};
void write_safetensors(const std::string& path, const std::map<std::string, Fp32Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// The bytes write_safetensors writes (for writers that place them themselves).
std::string safetensors_bytes(const std::map<std::string, Fp32Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace vit::io
