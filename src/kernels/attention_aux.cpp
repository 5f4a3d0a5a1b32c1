// Size of the attention forward's saved state (see attention.h).
//
// The cuDNN fused path keeps only the softmax statistics; it exists for bf16
// and fp16 only, so fp32 with AttentionImpl::CuDNN runs the cuBLAS path
// (attention.cu) and keeps its probabilities.
#include "kernels/attention.h"

namespace vit::kernels {

size_t attention_aux_bytes(Device device, AttentionImpl impl, DType compute, int64_t B, int64_t T, int64_t NH) {
  const auto rows = static_cast<size_t>(B * NH * T);
  if (device == Device::CPU) return rows * static_cast<size_t>(T) * sizeof(float);  // probabilities, fp32
  if (impl == AttentionImpl::CuDNN && compute != DType::F32) return rows * sizeof(float);  // softmax stats
  return rows * static_cast<size_t>(T) * dtype_size(compute);                               // probabilities
}

}  // namespace vit::kernels
