// Gradient buckets and the parameter all-gather of the data-parallel plugins
// (Megatron's habit: a bucket's collective starts the moment its last
// gradient is ready, on a communication stream, while backward goes on).
//
// GradBuckets owns the fp32 gradient memory of a BucketLayout and reduces it
// over the data-parallel group, one of two ways:
//   AllReduce      one padded buffer of the whole model; on the last
//                  micro-batch of a step each bucket is all-reduced (summed)
//                  as soon as backward has passed its lowest segment; every
//                  rank ends with the whole reduced gradient (torch_ddp,
//                  ZeRO stage 1).
//   ReduceScatter  ZeRO stage 2: no whole-model gradient buffer. A bucket's
//                  gradients are written into one of a few pooled slots
//                  (taken and zeroed when backward reaches the bucket); when
//                  the bucket is complete it is reduce-scattered in place and
//                  this rank's part is added into its fp32 gradient shard
//                  (BucketLayout::shard_total() elements), then the slot is
//                  free again. Every micro-batch reduces (the slots cannot
//                  hold a step's sum), so accumulation stays exact.
// The loss gradient is already divided by the global batch: the collectives
// sum. reduce_dtype BF16 (plugin.reduce_dtype) sends half the bytes: on the
// communication stream each bucket (or slot) is cast to a bf16 copy, the
// collective sums the copies, and the sum is cast back into the fp32
// gradient (ReduceScatter: this rank's part, then added into its shard), so
// every rank's gradient is rounded to bf16 and so is the sum (how the sum of
// the copies is formed is the communicator's: NCCL in bf16, MPI in fp32).
// The copies cost 2 bytes a gradient element (AllReduce) or a bf16 twin per
// slot (ReduceScatter). With one rank nothing is reduced or rounded.
// A rank with no images in a micro-batch still joins every collective
// (skip_micro), in the same order as the others.
//
// ParamGather (ZeRO): after the update each rank's part of every bucket of
// the compute-dtype parameters is all-gathered in place, bucket by bucket in
// forward order, on the communication stream; wait_for(segment) makes the
// compute stream wait for the bucket holding that segment, so the next
// forward overlaps the gathers of later buckets.
//
// On the CPU (MPI) every collective is synchronous and the streams and
// events are no-ops: the same code runs in order.
#pragma once

#include <memory>
#include <vector>

#include "core/context.h"
#include "core/device.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "parallel/bucket_layout.h"

namespace vit::comm {
class Communicator;
}

namespace vit::parallel {

enum class GradReduction { AllReduce, ReduceScatter };

class GradBuckets {
 public:
  GradBuckets(const BucketLayout& buckets, comm::Communicator& dp, const Context& ctx, GradReduction how,
              bool overlap, int pool_slots = 3, DType reduce_dtype = DType::F32);
  ~GradBuckets();

  GradReduction reduction() const { return how_; }
  // fp32 view of parameter `index`'s gradient (ReduceScatter: valid while
  // backward is inside the parameter's bucket).
  Tensor grad_view(int index) const;

  // Zeroes the gradients of the step; zero = false leaves them for the
  // step's first backward to assign (AllReduce only: ViTModel::set_assign_grads).
  void begin_step(bool zero = true);
  void begin_micro(bool last);                    // a micro-batch with images follows
  void skip_micro(bool last);                     // this rank has no images in this micro-batch
  void segment_started(const model::Segment& s);  // backward reached s (model: before_backward)
  void segment_done(const model::Segment& s);     // s's gradients are final (model: after_backward)
  // Launches what is still pending and makes the compute stream wait for
  // every reduction of the step.
  void finish();

  // After finish(): AllReduce: the whole reduced gradient (padded_total);
  // ReduceScatter: this rank's reduced shard (shard_total). Both fp32.
  Tensor reduced() const;
  // fp32 view of this rank's part of bucket b in reduced().
  Tensor reduced_part(int b) const;

 private:
  struct Slot;
  void launch(int b);
  void take_slot(int b);

  const BucketLayout& layout_;
  comm::Communicator& dp_;
  Context ctx_, comm_ctx_;
  GradReduction how_;
  bool overlap_;
  DType wire_;                          // the collectives' dtype: F32, or BF16 through the copies below
  Buffer wire_grads_;                   // AllReduce with BF16 and > 1 rank: bf16 twin of grads_
  bool last_micro_ = true;
  std::vector<int64_t> padded_offset_;  // by parameter index
  std::vector<int> bucket_of_param_;
  Buffer grads_;                        // AllReduce: padded_total; ReduceScatter: shard_total
  std::vector<std::unique_ptr<Slot>> slots_;
  int next_slot_ = 0;
  std::vector<int> slot_of_bucket_;     // ReduceScatter: the slot bucket b writes into (-1: none)
  std::vector<int> pending_;            // segments of bucket b still to finish in this micro-batch
  std::vector<bool> launched_;
  Stream comm_stream_;
  Event ready_, done_;
};

class ParamGather {
 public:
  // params: the compute-dtype padded parameter buffer (padded_total).
  ParamGather(const BucketLayout& buckets, comm::Communicator& dp, const Context& ctx, const Tensor& params);
  // Queues the all-gathers after the work already on the compute stream.
  void launch();
  // The compute stream waits for the bucket holding s (if still pending).
  void wait_for(const model::Segment& s);
  void wait_all();

 private:
  const BucketLayout& layout_;
  comm::Communicator& dp_;
  Context ctx_;
  Tensor params_;
  Stream comm_stream_;
  Event updated_;
  std::vector<Event> gathered_;
  std::vector<bool> pending_;
};

}  // namespace vit::parallel
