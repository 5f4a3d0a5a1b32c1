#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/error.h"
#include "io/metrics.h"

namespace vit::io {

namespace {

size_t dtype_bytes(const std::string& d) {
  if (d == "F32") return 4;
  if (d == "F16" || d == "BF16") return 2;
  if (d == "F64") return 8;
  return 0;
}

}  // namespace

int64_t SafeTensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::vector<float> SafeTensor::to_float() const {
  const int64_t n = numel();
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = bytes.data();
  for (int64_t i = 0; i < n; ++i) {
    if (dtype == "F32") {
      std::memcpy(&out[i], p + 4 * i, 4);
    } else if (dtype == "F64") {
      double d;
      std::memcpy(&d, p + 8 * i, 8);
      out[i] = static_cast<float>(d);
    } else {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = dtype == "F16" ? f16_to_float(f16_t{h}) : bf16_to_float(bf16_t{h});
    }
  }
  return out;
}

SafeTensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw UserError(str_cat(path, ": cannot open the safetensors file"));
  const auto file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  VIT_USER_CHECK(file_size >= 8, path, ": too short for a safetensors file (", file_size, " bytes)");
  uint8_t len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  VIT_USER_CHECK(header_len > 1 && header_len <= file_size - 8, path, ": header length ", header_len,
                 " does not fit a file of ", file_size, " bytes (damaged or not a safetensors file)");
  std::string header(header_len, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const std::exception& e) {
    throw UserError(str_cat(path, ": the header is not valid JSON (", e.what(), ")"));
  }
  VIT_USER_CHECK(j.is_object(), path, ": the header is not a JSON object");
  const uint64_t data_size = file_size - 8 - header_len;
  SafeTensorsFile out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        out.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      }
      continue;
    }
    const std::string& name = it.key();
    const nlohmann::json& t = it.value();
    VIT_USER_CHECK(t.is_object() && t.contains("dtype") && t.contains("shape") && t.contains("data_offsets"), path,
                   ": tensor '", name, "' lacks dtype, shape or data_offsets");
    SafeTensor st;
    st.dtype = t["dtype"].get<std::string>();
    const size_t esize = dtype_bytes(st.dtype);
    VIT_USER_CHECK(esize != 0, path, ": tensor '", name, "' has dtype ", st.dtype,
                   " (allowed: F32, F16, BF16, F64)");
    for (const auto& s : t["shape"]) {
      VIT_USER_CHECK(s.is_number_integer() && s.get<int64_t>() >= 0, path, ": tensor '", name, "' has a bad shape");
      st.shape.push_back(s.get<int64_t>());
    }
    const auto& off = t["data_offsets"];
    VIT_USER_CHECK(off.is_array() && off.size() == 2, path, ": tensor '", name, "' has bad data_offsets");
    const auto begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    VIT_USER_CHECK(begin <= end && end <= data_size, path, ": tensor '", name, "' spans bytes [", begin, ", ", end,
                   ") but the file holds ", data_size, " data bytes (truncated?)");
    VIT_USER_CHECK(end - begin == static_cast<uint64_t>(st.numel()) * esize, path, ": tensor '", name, "' has ",
                   end - begin, " bytes for ", st.numel(), " values of ", st.dtype);
    ranges.emplace_back(begin, end);
    st.bytes.resize(end - begin);
    in.seekg(static_cast<std::streamoff>(8 + header_len + begin));
    in.read(reinterpret_cast<char*>(st.bytes.data()), static_cast<std::streamsize>(end - begin));
    VIT_USER_CHECK(static_cast<bool>(in), path, ": reading tensor '", name, "' failed");
    out.tensors.emplace(name, std::move(st));
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;
  for (const auto& [b, e] : ranges) {
    VIT_USER_CHECK(b >= covered, path, ": tensors overlap at byte ", b);
    covered = e;
  }
  VIT_USER_CHECK(covered == data_size, path, ": ", data_size - covered,
                 " bytes after the last tensor (damaged or not a safetensors file)");
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, Fp32Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_file_atomic(path, safetensors_bytes(tensors, metadata));
}

std::string safetensors_bytes(const std::map<std::string, Fp32Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    int64_t n = 1;
    for (int64_t s : t.shape) n *= s;
    VIT_CHECK(n == static_cast<int64_t>(t.values.size()), "tensor ", name, " has ", t.values.size(),
              " values for its shape");
    header[name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + 4 * t.values.size()}}};
    offset += 4 * t.values.size();
  }
  std::string head = header.dump();
  head.append((8 - head.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  std::string blob;
  blob.reserve(8 + head.size() + offset);
  uint64_t len = head.size();
  for (int i = 0; i < 8; ++i) blob.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  blob += head;
  for (const auto& [name, t] : tensors) {
    blob.append(reinterpret_cast<const char*>(t.values.data()), 4 * t.values.size());
  }
  return blob;
}

}  // namespace vit::io
