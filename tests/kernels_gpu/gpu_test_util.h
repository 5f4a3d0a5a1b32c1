// Helpers of the CUDA kernel tests: random host data, device tensors of any
// dtype with their exact fp32 image for the CPU reference, NaN poisoning,
// and the comparison that every check goes through.
//
// The pattern of every test: draw fresh random fp32 values, round them to
// the dtype under test and upload (DevTensor::upload), give the CPU
// reference the rounded values (DevTensor::host, fp32), poison the GPU
// outputs with NaN, run both, download and compare with compare(): relative
// L2 error and largest element error against the op class's tolerances
// (common/tolerances.h), and no NaN or inf anywhere (a poisoned element that
// was never written shows as NaN).
#pragma once

#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/gpu_context.h"
#include "common/tolerances.h"

namespace vit::test {

inline Tensor make_view(void* p, DType t, Device d, const std::vector<int64_t>& shape) {
  Tensor x;
  x.data = p;
  x.dtype = t;
  x.device = d;
  x.ndim = static_cast<int>(shape.size());
  for (int i = 0; i < x.ndim; ++i) x.shape[i] = shape[i];
  return x;
}

inline float round_to(DType t, float v) {
  switch (t) {
    case DType::F32: return v;
    case DType::BF16: return bf16_to_float(float_to_bf16(v));
    case DType::F16: return f16_to_float(float_to_f16(v));
  }
  return v;
}

// Host fp32 values <-> raw bytes of dtype t.
inline std::vector<uint8_t> encode(DType t, const std::vector<float>& v) {
  std::vector<uint8_t> out(v.size() * dtype_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::F32) {
      std::memcpy(&out[4 * i], &v[i], 4);
    } else {
      const uint16_t bits = t == DType::BF16 ? float_to_bf16(v[i]).bits : float_to_f16(v[i]).bits;
      std::memcpy(&out[2 * i], &bits, 2);
    }
  }
  return out;
}
inline std::vector<float> decode(DType t, const std::vector<uint8_t>& b, size_t n) {
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (t == DType::F32) {
      std::memcpy(&out[i], &b[4 * i], 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, &b[2 * i], 2);
      out[i] = t == DType::BF16 ? bf16_to_float(bf16_t{bits}) : f16_to_float(f16_t{bits});
    }
  }
  return out;
}

// The seed is fresh every run (the point is to compute the same function on
// any input) and printed, so a failure can be replayed with VIT_TEST_SEED.
inline uint64_t test_seed() {
  static const uint64_t seed = [] {
    if (const char* s = std::getenv("VIT_TEST_SEED")) return static_cast<uint64_t>(std::strtoull(s, nullptr, 10));
    std::random_device rd;
    return (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }();
  return seed;
}

inline Rng& rng() {
  static Rng r(test_seed());
  return r;
}

// Uniform in [lo, hi), never exactly zero.
inline std::vector<float> random_values(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) {
    do {
      x = static_cast<float>(rng().uniform(lo, hi));
    } while (x == 0.0f);
  }
  return v;
}

inline std::vector<float> random_normal(size_t n, float stddev) {
  std::vector<float> v(n);
  for (auto& x : v) {
    do {
      x = static_cast<float>(rng().normal() * stddev);
    } while (x == 0.0f);
  }
  return v;
}

// A device tensor of dtype t plus the fp32 image of its contents.
struct DevTensor {
  Buffer buf;
  Tensor t;                 // on the GPU
  std::vector<float> host;  // the rounded values, fp32
  std::vector<int64_t> shape;

  DevTensor() = default;
  DevTensor(DType dtype, std::vector<int64_t> shp) : shape(std::move(shp)) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    // +64 bytes: a write past the end lands in our own slack, and a check
    // below catches it through the guard pattern.
    buf = Buffer(static_cast<size_t>(n) * dtype_size(dtype) + 64, Device::CUDA);
    t = make_view(buf.data(), dtype, Device::CUDA, shape);
    host.assign(static_cast<size_t>(n), 0.0f);
  }
  int64_t numel() const { return t.numel(); }

  // Rounds `values` to the dtype, keeps the rounded fp32 image, uploads.
  void upload(const std::vector<float>& values) {
    BOOST_TEST_REQUIRE(static_cast<int64_t>(values.size()) == numel());
    for (size_t i = 0; i < values.size(); ++i) host[i] = round_to(t.dtype, values[i]);
    const auto bytes = encode(t.dtype, host);
    copy_bytes(buf.data(), Device::CUDA, bytes.data(), Device::CPU, bytes.size());
  }
  // Every element NaN (and the slack after the end a known pattern).
  void poison() {
    std::vector<uint8_t> bytes(buf.bytes(), 0xA5);
    const size_t n = static_cast<size_t>(numel());
    for (size_t i = 0; i < n; ++i) {
      if (t.dtype == DType::F32) {
        const uint32_t nan = 0x7fc00000u;
        std::memcpy(&bytes[4 * i], &nan, 4);
      } else {
        const uint16_t nan = t.dtype == DType::BF16 ? 0x7fc0 : 0x7e00;
        std::memcpy(&bytes[2 * i], &nan, 2);
      }
    }
    copy_bytes(buf.data(), Device::CUDA, bytes.data(), Device::CPU, bytes.size());
  }
  std::vector<float> download() const {
    std::vector<uint8_t> bytes(buf.bytes());
    copy_bytes(bytes.data(), Device::CPU, buf.data(), Device::CUDA, bytes.size());
    return decode(t.dtype, bytes, static_cast<size_t>(numel()));
  }
  // The elements' bytes as stored (bitwise comparisons; NaN compares too).
  std::vector<uint8_t> raw() const {
    std::vector<uint8_t> bytes(static_cast<size_t>(numel()) * dtype_size(t.dtype));
    copy_bytes(bytes.data(), Device::CPU, buf.data(), Device::CUDA, bytes.size());
    return bytes;
  }
  // True when the 64 bytes after the last element are untouched. Only
  // meaningful after poison() (which writes the pattern).
  bool slack_intact() const {
    std::vector<uint8_t> bytes(buf.bytes());
    copy_bytes(bytes.data(), Device::CPU, buf.data(), Device::CUDA, bytes.size());
    for (size_t i = static_cast<size_t>(numel()) * dtype_size(t.dtype); i < bytes.size(); ++i) {
      if (bytes[i] != 0xA5) return false;
    }
    return true;
  }
  // A CPU tensor over the fp32 image (for the cpu:: reference).
  Tensor cpu() { return make_view(host.data(), DType::F32, Device::CPU, shape); }
};

// Raw int32 device buffers (labels, predictions).
struct DevInts {
  Buffer buf;
  Tensor t;
  std::vector<int32_t> host;
  explicit DevInts(int64_t n) : buf(static_cast<size_t>(n) * 4, Device::CUDA), host(static_cast<size_t>(n)) {
    // Tensor has no integer dtype: int32 buffers are carried as 4-byte F32 views.
    t = make_view(buf.data(), DType::F32, Device::CUDA, {n});
  }
  void upload() { copy_bytes(buf.data(), Device::CUDA, host.data(), Device::CPU, host.size() * 4); }
  std::vector<int32_t> download() const {
    std::vector<int32_t> v(host.size());
    copy_bytes(v.data(), Device::CPU, buf.data(), Device::CUDA, v.size() * 4);
    return v;
  }
  Tensor cpu() { return make_view(host.data(), DType::F32, Device::CPU, {static_cast<int64_t>(host.size())}); }
};

struct CheckRecord {
  std::string what;
  double rel, max_abs, tol;
  bool pass;
};
inline std::vector<CheckRecord>& records() {
  static std::vector<CheckRecord> r;
  return r;
}

inline std::string dtype_str(DType t) { return dtype_name(t); }

// Two bounds, both from the one table (common/tolerances.h):
//   rel     = ||got - ref||_2 / ||ref||_2                 <= tol.rel
//   max_abs = max_i |got_i - ref_i| / max_i |ref_i|       <= tol.max_abs
// The L2 bound sees small errors spread over the whole tensor (a wrong
// scale); the max-abs bound sees a few wrong elements that the L2 norm of a
// large tensor would average away. Any non-finite value in got fails.
inline bool compare(const std::string& what, const std::vector<float>& got, const std::vector<float>& ref,
                    Bound tol) {
  BOOST_TEST_REQUIRE(got.size() == ref.size());
  double num = 0.0, den = 0.0, max_abs = 0.0, max_ref = 0.0;
  size_t bad = 0, first_bad = 0, worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
    if (!std::isfinite(got[i])) {
      if (bad++ == 0) first_bad = i;
      continue;
    }
    const double d = static_cast<double>(got[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
    if (std::fabs(d) > max_abs) {
      max_abs = std::fabs(d);
      worst = i;
    }
  }
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  const double max_rel = max_ref > 0 ? max_abs / max_ref : max_abs;
  const bool pass = bad == 0 && rel <= tol.rel && max_rel <= tol.max_abs;
  records().push_back({what, bad ? NAN : rel, max_rel, tol.rel, pass});
  BOOST_CHECK_MESSAGE(pass, what << ": rel " << rel << " (tol " << tol.rel << "), max|d|/max|ref| " << max_rel
                                 << " (tol " << tol.max_abs << ") at element " << worst << " (got " << got[worst]
                                 << ", ref " << ref[worst] << ")"
                                 << (bad ? ", non-finite elements: " + std::to_string(bad) + " first at " +
                                               std::to_string(first_bad)
                                         : std::string()));
  BOOST_TEST_MESSAGE(what << ": rel " << rel << " max|d|/max|ref| " << max_rel << " tol " << tol.rel << " / "
                          << tol.max_abs);
  return pass;
}

// The kernel tests give an op class's L2 tolerance; its max-abs bound comes
// with it from the table.
inline bool compare(const std::string& what, const std::vector<float>& got, const std::vector<float>& ref,
                    double rel_tol) {
  return compare(what, got, ref, Bound{rel_tol, max_abs_for(rel_tol)});
}

// One GPU runtime for the whole test program (TF32 off unless a test sets
// it); the test module's global fixture releases it before CUDA shuts down.
inline std::unique_ptr<GpuRuntime>& gpu_holder() {
  static std::unique_ptr<GpuRuntime> rt;
  return rt;
}
inline GpuRuntime& gpu() {
  auto& rt = gpu_holder();
  if (!rt) rt = std::make_unique<GpuRuntime>(0, false);
  return *rt;
}

inline Context cpu_ctx() { return Context{}; }

}  // namespace vit::test
