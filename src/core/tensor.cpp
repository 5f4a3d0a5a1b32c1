#include "core/tensor.h"

namespace vit {

std::string Tensor::shape_str() const {
  std::string s = "(";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

Tensor tensor_of(const Buffer& buf, DType dtype, std::initializer_list<int64_t> dims, size_t offset_elems) {
  Tensor t(static_cast<char*>(buf.data()) + offset_elems * dtype_size(dtype), dtype, buf.device(), dims);
  VIT_CHECK((offset_elems * dtype_size(dtype)) + t.bytes() <= buf.bytes(), "tensor ", t.shape_str(),
            " at offset ", offset_elems, " overruns its buffer of ", buf.bytes(), " bytes");
  return t;
}

}  // namespace vit
