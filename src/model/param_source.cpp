#include "model/param_source.h"

#include "core/error.h"

namespace vit::model {

Tensor param_view(void* base, DType t, Device d, const ParamInfo& p) {
  switch (p.shape.size()) {
    case 1: return Tensor(base, t, d, {p.shape[0]});
    case 2: return Tensor(base, t, d, {p.shape[0], p.shape[1]});
    default: VIT_THROW("parameter ", p.name, " has an unexpected rank ", p.shape.size());
  }
}

FlatParamSource::FlatParamSource(const ParamLayout& layout, const Tensor& params, const Tensor& grads)
    : layout_(layout), params_(params), grads_(grads) {
  VIT_CHECK(params.defined() && params.numel() == layout.total(), "parameter buffer holds ", params.numel(),
            " values, the layout ", layout.total());
  if (grads.defined()) {
    VIT_CHECK(grads.numel() == layout.total() && grads.dtype == DType::F32 && grads.device == params.device,
              "gradient buffer must be fp32, on the parameters' device, with ", layout.total(), " values");
  }
}

Tensor FlatParamSource::param(int index) {
  const ParamInfo& p = layout_[index];
  char* base = static_cast<char*>(params_.data) + p.offset * static_cast<int64_t>(dtype_size(params_.dtype));
  return param_view(base, params_.dtype, params_.device, p);
}

Tensor FlatParamSource::grad(int index) {
  VIT_CHECK(grads_.defined(), "ViTModel: bind() a gradient buffer before backward");
  const ParamInfo& p = layout_[index];
  return param_view(static_cast<float*>(grads_.data) + p.offset, DType::F32, grads_.device, p);
}

}  // namespace vit::model
