#include "kernels/attention.h"

namespace vit::kernels {

size_t attention_aux_bytes(Device device, AttentionImpl impl, DType compute, int64_t B, int64_t T, int64_t NH) {
  const auto rows = static_cast<size_t>(B * NH * T);
  if (device == Device::CPU) return rows * static_cast<size_t>(T) * sizeof(float);  // probabilities, fp32
  if (impl == AttentionImpl::CuDNN) return rows * sizeof(float);                   // softmax stats
  return rows * static_cast<size_t>(T) * dtype_size(compute);                       // probabilities
}

}  // namespace vit::kernels
