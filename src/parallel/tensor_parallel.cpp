#include "parallel/tensor_parallel.h"

#include "comm/communicator.h"
#include "core/error.h"

namespace vit::parallel {

void TensorParallelGroup::all_reduce(Tensor x) {
  VIT_CHECK(x.device == ctx_.device, "tensor-parallel reduction of a tensor on ", device_name(x.device),
            " with a model on ", device_name(ctx_.device));
  ++calls_;
  if (tp_.size() == 1) return;
  tp_.all_reduce(x.data, static_cast<size_t>(x.numel()), x.dtype, comm::ReduceOp::Sum, x.device, ctx_.stream);
}

}  // namespace vit::parallel
