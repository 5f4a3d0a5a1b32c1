// Tensor: a non-owning view (pointer + shape + dtype + device).
//
// Memory is owned by Buffers (device.h); tensors are cheap to copy and are
// what kernels take. Shapes are row-major, at most 4 dimensions, and the
// comment beside each kernel argument names them with the project's letters:
// B batch, T tokens, C channels (hidden), NH heads, HS head size,
// NP patches, P patch values (3*ps*ps), K classes, M rows, N/OC out features.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace vit {

struct Tensor {
  static constexpr int kMaxDims = 4;

  void* data = nullptr;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};

  Tensor() = default;
  Tensor(void* p, DType t, Device d, std::initializer_list<int64_t> dims) : data(p), dtype(t), device(d) {
    VIT_CHECK(dims.size() <= kMaxDims, "tensor rank ", dims.size(), " > ", kMaxDims);
    for (int64_t s : dims) shape[ndim++] = s;
  }

  bool defined() const { return data != nullptr; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return ndim == 0 ? 0 : n;
  }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }

  template <typename T>
  T* as() const { return static_cast<T*>(data); }
  float* f32() const {
    VIT_CHECK(dtype == DType::F32, "expected an fp32 tensor, got ", dtype_name(dtype));
    return static_cast<float*>(data);
  }

  // Same memory, another shape with the same element count.
  Tensor reshape(std::initializer_list<int64_t> dims) const {
    Tensor t(data, dtype, device, dims);
    VIT_CHECK(t.numel() == numel(), "reshape changes the element count");
    return t;
  }

  std::string shape_str() const;
};

// A tensor over a Buffer, starting `offset_elems` elements in.
Tensor tensor_of(const Buffer& buf, DType dtype, std::initializer_list<int64_t> dims, size_t offset_elems = 0);

}  // namespace vit
