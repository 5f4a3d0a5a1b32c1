#include "parallel/grad_buckets.h"

#include <algorithm>

#include "comm/communicator.h"
#include "core/error.h"
#include "kernels/cast.h"
#include "kernels/profile.h"
#include "kernels/residual.h"
#include "model/param_source.h"

namespace vit::parallel {

namespace k = vit::kernels;

// A pooled gradient buffer of ZeRO-2: written by backward on the compute
// stream, reduced on the communication stream; `free` is recorded after the
// reduction so the next user waits for it.
struct GradBuckets::Slot {
  Buffer buf;
  Buffer wire;  // reduce_dtype BF16 with > 1 rank: the slot's bf16 copy
  Event free;
  bool used = false;
};

GradBuckets::GradBuckets(const BucketLayout& buckets, comm::Communicator& dp, const Context& ctx, GradReduction how,
                         bool overlap, int pool_slots, DType reduce_dtype)
    : layout_(buckets),
      dp_(dp),
      ctx_(ctx),
      comm_ctx_(ctx),
      how_(how),
      overlap_(overlap),
      wire_(reduce_dtype),
      comm_stream_(ctx.device),
      ready_(ctx.device),
      done_(ctx.device) {
  comm_ctx_.stream = comm_stream_.handle();
  VIT_CHECK(wire_ == DType::F32 || wire_ == DType::BF16, "gradient reduction in ", dtype_name(wire_),
            " (allowed: fp32, bf16)");
  const bool copies = wire_ == DType::BF16 && dp.size() > 1;
  const model::ParamLayout& L = buckets.layout();
  const auto& params = L.params();
  padded_offset_.resize(params.size());
  bucket_of_param_.assign(params.size(), -1);
  for (size_t b = 0; b < buckets.buckets().size(); ++b) {
    const Bucket& bk = buckets.buckets()[b];
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].offset >= bk.begin && params[i].offset < bk.end) {
        bucket_of_param_[i] = static_cast<int>(b);
        padded_offset_[i] = bk.padded_begin + (params[i].offset - bk.begin);
      }
    }
  }
  const size_t nb = buckets.buckets().size();
  pending_.assign(nb, 0);
  launched_.assign(nb, false);
  slot_of_bucket_.assign(nb, -1);
  if (how == GradReduction::AllReduce) {
    grads_ = Buffer(static_cast<size_t>(buckets.padded_total()) * 4, ctx.device);
    // The padding between parameters is never written by backward: zero it
    // once, so a step that assigns instead of zeroing (begin_step(false))
    // sums and reduces zeros there.
    grads_.zero();
    if (copies) wire_grads_ = Buffer(static_cast<size_t>(buckets.padded_total()) * 2, ctx.device);
  } else {
    grads_ = Buffer(static_cast<size_t>(buckets.shard_total()) * 4, ctx.device);
    int64_t largest = 0;
    for (const Bucket& bk : buckets.buckets()) largest = std::max(largest, bk.padded_size);
    const int count = std::max(1, std::min<int>(pool_slots, static_cast<int>(nb)));
    for (int i = 0; i < count; ++i) {
      auto s = std::make_unique<Slot>();
      s->buf = Buffer(static_cast<size_t>(largest) * 4, ctx.device);
      if (copies) s->wire = Buffer(static_cast<size_t>(largest) * 2, ctx.device);
      s->free = Event(ctx.device);
      slots_.push_back(std::move(s));
    }
  }
}

GradBuckets::~GradBuckets() = default;

Tensor GradBuckets::grad_view(int index) const {
  const model::ParamInfo& p = layout_.layout()[index];
  const int b = bucket_of_param_[static_cast<size_t>(index)];
  VIT_CHECK(b >= 0, "parameter ", p.name, " is in no bucket");
  float* base = nullptr;
  if (how_ == GradReduction::AllReduce) {
    base = grads_.as<float>() + padded_offset_[static_cast<size_t>(index)];
  } else {
    const int s = slot_of_bucket_[static_cast<size_t>(b)];
    VIT_CHECK(s >= 0, "gradient of ", p.name, " asked for outside backward of its bucket");
    const Bucket& bk = layout_.buckets()[static_cast<size_t>(b)];
    base = slots_[static_cast<size_t>(s)]->buf.as<float>() + (padded_offset_[static_cast<size_t>(index)] - bk.padded_begin);
  }
  return model::param_view(base, DType::F32, ctx_.device, p);
}

void GradBuckets::begin_step(bool zero) {
  if (zero) k::fill(ctx_, tensor_of(grads_, DType::F32, {static_cast<int64_t>(grads_.bytes() / 4)}), 0.0f);
  std::fill(launched_.begin(), launched_.end(), false);
}

void GradBuckets::begin_micro(bool last) {
  last_micro_ = last;
  for (size_t b = 0; b < pending_.size(); ++b) {
    pending_[b] = static_cast<int>(layout_.buckets()[b].segments.size());
    slot_of_bucket_[b] = -1;
  }
}

void GradBuckets::skip_micro(bool last) {
  begin_micro(last);
  if (how_ == GradReduction::AllReduce) return;  // finish() joins the step's reductions
  // ReduceScatter reduces every micro-batch: join with zeros, in backward order.
  for (size_t b = 0; b < pending_.size(); ++b) {
    take_slot(static_cast<int>(b));
    pending_[b] = 0;
    launch(static_cast<int>(b));
  }
}

void GradBuckets::take_slot(int b) {
  const int s = next_slot_;
  next_slot_ = (next_slot_ + 1) % static_cast<int>(slots_.size());
  Slot& slot = *slots_[static_cast<size_t>(s)];
  if (slot.used) stream_wait_event(ctx_.stream, slot.free);  // its last reduction has read it
  slot.used = true;
  slot_of_bucket_[static_cast<size_t>(b)] = s;
  const int64_t n = layout_.buckets()[static_cast<size_t>(b)].padded_size;
  k::fill(ctx_, Tensor(slot.buf.data(), DType::F32, ctx_.device, {n}), 0.0f);
}

void GradBuckets::segment_started(const model::Segment& s) {
  if (how_ != GradReduction::ReduceScatter) return;
  const int b = layout_.bucket_of(s);
  if (slot_of_bucket_[static_cast<size_t>(b)] < 0) take_slot(b);
}

void GradBuckets::segment_done(const model::Segment& s) {
  const int b = layout_.bucket_of(s);
  int& left = pending_[static_cast<size_t>(b)];
  VIT_CHECK(left > 0, "segment ", s.name(), " finished twice in one micro-batch");
  --left;
  if (left > 0) return;
  if (how_ == GradReduction::ReduceScatter) {
    launch(b);  // every micro-batch; the slot must be freed
  } else if (last_micro_ && overlap_) {
    launch(b);
  }
}

void GradBuckets::launch(int b) {
  const Bucket& bk = layout_.buckets()[static_cast<size_t>(b)];
  const int dp = dp_.size();
  if (how_ == GradReduction::AllReduce) {
    launched_[static_cast<size_t>(b)] = true;
    if (dp == 1) return;
    ready_.record(ctx_.stream);
    comm_stream_.wait(ready_);
    const k::ProfileScope timed(ctx_.device, comm_stream_.handle(), "all_reduce (gradients)");
    float* g = grads_.as<float>() + bk.padded_begin;
    if (wire_ == DType::BF16) {
      const Tensor fp32(g, DType::F32, ctx_.device, {bk.padded_size});
      const Tensor copy(static_cast<uint16_t*>(wire_grads_.data()) + bk.padded_begin, DType::BF16, ctx_.device,
                        {bk.padded_size});
      k::cast(comm_ctx_, copy, fp32);
      dp_.all_reduce(copy.data, static_cast<size_t>(bk.padded_size), DType::BF16, comm::ReduceOp::Sum, ctx_.device,
                     comm_stream_.handle());
      k::cast(comm_ctx_, fp32, copy);
    } else {
      dp_.all_reduce(g, static_cast<size_t>(bk.padded_size), DType::F32, comm::ReduceOp::Sum, ctx_.device,
                     comm_stream_.handle());
    }
    return;
  }
  const int s = slot_of_bucket_[static_cast<size_t>(b)];
  VIT_CHECK(s >= 0, "bucket ", b, " reduced without a slot");
  Slot& slot = *slots_[static_cast<size_t>(s)];
  const int64_t part = layout_.part_size(b);
  float* base = slot.buf.as<float>();
  float* mine = base + static_cast<int64_t>(layout_.dp_rank()) * part;
  ready_.record(ctx_.stream);
  comm_stream_.wait(ready_);
  const k::ProfileScope timed(ctx_.device, comm_stream_.handle(), "reduce_scatter (gradients)");
  if (dp > 1 && wire_ == DType::BF16) {
    // The slot's bf16 copy is reduce-scattered; this rank's part of the sum
    // comes back into its fp32 part of the slot (free once the copy is made).
    const int64_t n = bk.padded_size;
    uint16_t* wire = static_cast<uint16_t*>(slot.wire.data());
    const Tensor copy(wire, DType::BF16, ctx_.device, {n});
    k::cast(comm_ctx_, copy, Tensor(base, DType::F32, ctx_.device, {n}));
    uint16_t* wire_mine = wire + static_cast<int64_t>(layout_.dp_rank()) * part;
    dp_.reduce_scatter(wire, wire_mine, static_cast<size_t>(part), DType::BF16, comm::ReduceOp::Sum, ctx_.device,
                       comm_stream_.handle());
    k::cast(comm_ctx_, Tensor(mine, DType::F32, ctx_.device, {part}),
            Tensor(wire_mine, DType::BF16, ctx_.device, {part}));
  } else if (dp > 1) {
    dp_.reduce_scatter(base, mine, static_cast<size_t>(part), DType::F32, comm::ReduceOp::Sum, ctx_.device,
                       comm_stream_.handle());
  }
  k::accumulate(comm_ctx_, Tensor(grads_.as<float>() + bk.shard_offset, DType::F32, ctx_.device, {part}),
                Tensor(mine, DType::F32, ctx_.device, {part}));
  slot.free.record(comm_stream_.handle());
  slot_of_bucket_[static_cast<size_t>(b)] = -1;
  launched_[static_cast<size_t>(b)] = true;
}

void GradBuckets::finish() {
  if (how_ == GradReduction::AllReduce) {
    // Buckets not launched yet (overlap off, or a rank without images in the
    // last micro-batch) go now, in bucket order like everyone else's.
    for (size_t b = 0; b < launched_.size(); ++b) {
      if (!launched_[b]) launch(static_cast<int>(b));
    }
  }
  done_.record(comm_stream_.handle());
  stream_wait_event(ctx_.stream, done_);
}

Tensor GradBuckets::reduced() const {
  return tensor_of(grads_, DType::F32, {static_cast<int64_t>(grads_.bytes() / 4)});
}

Tensor GradBuckets::reduced_part(int b) const {
  const int64_t part = layout_.part_size(b);
  const int64_t at = how_ == GradReduction::AllReduce ? layout_.part_begin(b)
                                                      : layout_.buckets()[static_cast<size_t>(b)].shard_offset;
  return Tensor(grads_.as<float>() + at, DType::F32, ctx_.device, {part});
}

// ---------------------------------------------------------------------------

ParamGather::ParamGather(const BucketLayout& buckets, comm::Communicator& dp, const Context& ctx, const Tensor& params)
    : layout_(buckets), dp_(dp), ctx_(ctx), params_(params), comm_stream_(ctx.device), updated_(ctx.device) {
  VIT_CHECK(params.numel() == buckets.padded_total(), "ParamGather: the parameter buffer holds ", params.numel(),
            " values, the padded layout ", buckets.padded_total());
  for (size_t b = 0; b < buckets.buckets().size(); ++b) gathered_.emplace_back(ctx.device);
  pending_.assign(buckets.buckets().size(), false);
}

void ParamGather::launch() {
  if (dp_.size() == 1) return;
  updated_.record(ctx_.stream);
  comm_stream_.wait(updated_);
  const size_t es = dtype_size(params_.dtype);
  char* base = static_cast<char*>(params_.data);
  // Forward order: the embeddings' bucket (the last one formed) first.
  for (int b = static_cast<int>(layout_.buckets().size()) - 1; b >= 0; --b) {
    const int64_t part = layout_.part_size(b);
    char* recv = base + layout_.buckets()[static_cast<size_t>(b)].padded_begin * static_cast<int64_t>(es);
    char* send = base + layout_.part_begin(b) * static_cast<int64_t>(es);
    const k::ProfileScope timed(ctx_.device, comm_stream_.handle(), "all_gather (parameters)");
    dp_.all_gather(send, recv, static_cast<size_t>(part), params_.dtype, ctx_.device, comm_stream_.handle());
    gathered_[static_cast<size_t>(b)].record(comm_stream_.handle());
    pending_[static_cast<size_t>(b)] = true;
  }
}

void ParamGather::wait_for(const model::Segment& s) {
  const int b = layout_.bucket_of(s);
  if (!pending_[static_cast<size_t>(b)]) return;
  stream_wait_event(ctx_.stream, gathered_[static_cast<size_t>(b)]);
  pending_[static_cast<size_t>(b)] = false;
}

void ParamGather::wait_all() {
  for (size_t b = 0; b < pending_.size(); ++b) {
    if (!pending_[b]) continue;
    stream_wait_event(ctx_.stream, gathered_[b]);
    pending_[b] = false;
  }
}

}  // namespace vit::parallel
