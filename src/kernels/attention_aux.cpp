// Which attention path runs a shape, and the size of the forward's saved
// state (see attention.h).
//
// The cuDNN fused path keeps only the softmax statistics; it exists for bf16
// and fp16 only, so fp32 with AttentionImpl::CuDNN runs the cuBLAS path
// (attention.cu) and keeps its probabilities, as do both cuBLAS forms.
#include "kernels/attention.h"

#include "core/error.h"

namespace vit::kernels {

const char* attention_impl_name(AttentionImpl impl) {
  switch (impl) {
    case AttentionImpl::CuDNN: return "cudnn";
    case AttentionImpl::Cublas: return "cublas";
    case AttentionImpl::CublasPadded: return "cublas (padded heads)";
  }
  VIT_THROW("unknown attention path ", static_cast<int>(impl));
}

AttentionImpl resolve_attention(Device device, AttentionImpl requested, DType dt, int64_t C, int64_t NH,
                                std::string* why) {
  if (why) why->clear();
  if (device == Device::CPU) return requested;
  VIT_CHECK(NH > 0 && C % NH == 0, "attention: C = ", C, " is not divisible by NH = ", NH);
  const int64_t HS = C / NH;
  const int64_t e = static_cast<int64_t>(dtype_size(dt));
  if (requested == AttentionImpl::CublasPadded) return requested;  // runs every shape
  const bool cudnn_shape = dt != DType::F32 && HS % 8 == 0 && HS <= 256;
  if (requested == AttentionImpl::CuDNN && cudnn_shape) return AttentionImpl::CuDNN;
  const bool aligned = (HS * e) % 16 == 0 && (C * e) % 16 == 0;
  const AttentionImpl cublas = aligned ? AttentionImpl::Cublas : AttentionImpl::CublasPadded;
  if (why) {
    if (requested == AttentionImpl::CuDNN && dt != DType::F32) {
      *why = str_cat("cuDNN's fused attention needs a head size that is a multiple of 8 (at most 256); head size ",
                     HS, " runs on the ", attention_impl_name(cublas), " path instead");
    } else if (cublas == AttentionImpl::CublasPadded) {
      *why = str_cat("head size ", HS, " (", HS * e, " bytes in ", dtype_name(dt),
                     ") is not a multiple of 16 bytes: attention runs on a zero-padded copy of the heads "
                     "(same results, some extra memory traffic)");
    }
  }
  return cublas;
}

size_t attention_aux_bytes(Device device, AttentionImpl impl, DType compute, int64_t B, int64_t T, int64_t NH) {
  const auto rows = static_cast<size_t>(B * NH * T);
  if (device == Device::CPU) return rows * static_cast<size_t>(T) * sizeof(float);  // probabilities, fp32
  if (impl == AttentionImpl::CuDNN && compute != DType::F32) return rows * sizeof(float);  // softmax stats
  return rows * static_cast<size_t>(T) * dtype_size(compute);                               // probabilities
}

#ifndef VIT_WITH_CUDA
bool cudnn_attention_available(const Context&, DType, int64_t, int64_t, int64_t, int64_t, std::string* why) {
  if (why) *why = "vit_hpc was built without CUDA";
  return false;
}
bool attention_backward_in_place(const Context&, AttentionImpl, DType, int64_t, int64_t, int64_t) { return false; }
#endif

}  // namespace vit::kernels
