// The model's tensor-parallel reductions over the mesh's tp communicator
// (Megatron 1-D; the model calls all_reduce at the four places a block
// communicates: reduce_from_tensor_parallel_region after proj and fc2 in
// forward, the backward of copy_to_tensor_parallel_region after the qkv and
// fc1 input gradients).
//
// Each reduction is a sum in the compute dtype, ordered on the compute
// stream: NCCL enqueues it there and returns, MPI (CPU, or ranks sharing a
// GPU) synchronises the stream first and returns with the sum in place. The
// next kernel needs the sum, so nothing would gain from another stream.
#pragma once

#include <cstdint>

#include "core/context.h"
#include "model/vit.h"

namespace vit::comm {
class Communicator;
}

namespace vit::parallel {

class TensorParallelGroup final : public model::TensorParallelComm {
 public:
  TensorParallelGroup(comm::Communicator& tp, const Context& ctx) : tp_(tp), ctx_(ctx) {}
  void all_reduce(Tensor x) override;
  // Reductions issued so far (tests count four per block and micro-batch).
  int64_t calls() const { return calls_; }

 private:
  comm::Communicator& tp_;
  Context ctx_;
  int64_t calls_ = 0;
};

}  // namespace vit::parallel
