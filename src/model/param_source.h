// Where the model gets its parameters and puts its gradients.
//
// The model never owns weights: it asks a ParamSource for a view of
// parameter `index` (ParamLayout numbering, local shape, compute dtype) and of
// its fp32 gradient, and tells the source before and after it uses each
// segment (embeddings, block l, head):
//
//   forward:   before_forward(s) ... param(i) ... after_forward(s)
//   backward:  before_backward(s) ... param(i), grad(i) += ... after_backward(s)
//
// What a plugin does there is its business: the data-parallel plugins hand
// out views of flat buffers and start a gradient bucket's reduction in
// after_backward; a ZeRO-3 plugin gathers a chunk in before_* and releases it
// in after_*; a plugin that overlaps the parameter all-gather of the last
// step with forward waits for the bucket's gather in before_forward.
// Gradients are accumulated (+=) by backward, so micro-batches of one step
// add up; whoever owns the gradient memory zeroes it.
#pragma once

#include "core/tensor.h"
#include "model/params.h"

namespace vit::model {

class ParamSource {
 public:
  virtual ~ParamSource() = default;
  // Compute-dtype view of parameter `index`, local shape (ParamInfo::shape).
  virtual Tensor param(int index) = 0;
  // fp32 gradient view of parameter `index`; undefined for an evaluation-only source.
  virtual Tensor grad(int index) = 0;
  virtual void before_forward(const Segment&) {}
  virtual void after_forward(const Segment&) {}
  virtual void before_backward(const Segment&) {}
  // The segment's parameter gradients are final for this micro-batch.
  virtual void after_backward(const Segment&) {}
};

// The simplest source: two flat buffers that follow the layout (parameters in
// the compute dtype, gradients fp32 or none). What bind() installs.
class FlatParamSource final : public ParamSource {
 public:
  FlatParamSource(const ParamLayout& layout, const Tensor& params, const Tensor& grads);
  Tensor param(int index) override;
  Tensor grad(int index) override;

 private:
  const ParamLayout& layout_;
  Tensor params_, grads_;
};

// A view of `numel` elements of parameter p's local shape at `base` (which
// points at the parameter's first element), in dtype t on device d.
Tensor param_view(void* base, DType t, Device d, const ParamInfo& p);

}  // namespace vit::model
