#include "parallel/chunk_pool.h"

#include <algorithm>

#include "comm/communicator.h"
#include "core/error.h"
#include "parallel/chunk_timeline.h"

namespace vit::parallel {

ChunkPool::ChunkPool(const BucketLayout& chunks, comm::Communicator& dp, const Context& ctx, DType dtype, int slots,
                     void* comm_stream)
    : chunks_(chunks), dp_(dp), ctx_(ctx), dtype_(dtype), comm_stream_(comm_stream) {
  VIT_CHECK(slots >= 1, "the chunk pool needs at least one slot, got ", slots);
  const size_t n = chunks.buckets().size();
  int64_t largest = 0;
  for (const Bucket& b : chunks.buckets()) largest = std::max(largest, b.padded_size);
  for (int i = 0; i < slots; ++i) {
    Slot s;
    s.buf = Buffer(static_cast<size_t>(largest) * dtype_size(dtype), ctx.device);
    s.gathered = Event(ctx.device);
    s.released = Event(ctx.device);
    slots_.push_back(std::move(s));
  }
  part_.assign(n, nullptr);
  part_where_.assign(n, ctx.device);
}

size_t ChunkPool::slot_bytes() const { return slots_.front().buf.bytes(); }

void ChunkPool::set_part(int c, const void* part, Device where) {
  VIT_CHECK(c >= 0 && c < static_cast<int>(part_.size()), "chunk ", c, " of ", part_.size());
  part_[static_cast<size_t>(c)] = part;
  part_where_[static_cast<size_t>(c)] = where;
}

int ChunkPool::slot_of(int c) const {
  for (size_t s = 0; s < slots_.size(); ++s) {
    if (slots_[s].chunk == c) return static_cast<int>(s);
  }
  return -1;
}

int ChunkPool::victim() const {
  int best = -1;
  for (size_t s = 0; s < slots_.size(); ++s) {
    const Slot& slot = slots_[s];
    if (slot.in_use || slot.reserved) continue;
    if (best < 0 || slot.last_use < slots_[static_cast<size_t>(best)].last_use) best = static_cast<int>(s);
  }
  return best;
}

void ChunkPool::gather(int c, int s) {
  const void* part = part_[static_cast<size_t>(c)];
  VIT_CHECK(part != nullptr, "chunk ", c, ": no part was set before its gather");
  if (guard_) guard_(c);
  Slot& slot = slots_[static_cast<size_t>(s)];
  // The slot's previous chunk may still be read by queued compute work.
  if (slot.released_once) stream_wait_event(comm_stream_, slot.released);
  const int span = timeline_ ? timeline_->begin("comm", "gather", c, comm_stream_) : -1;
  const int64_t n = chunks_.part_size(c);
  const size_t es = dtype_size(dtype_);
  char* base = static_cast<char*>(slot.buf.data());
  char* mine = base + static_cast<int64_t>(dp_.rank()) * n * static_cast<int64_t>(es);
  if (dp_.size() == 1) {
    copy_bytes_async(base, part, static_cast<size_t>(n) * es, comm_stream_);
  } else if (part_where_[static_cast<size_t>(c)] == ctx_.device) {
    dp_.all_gather(part, base, static_cast<size_t>(n), dtype_, ctx_.device, comm_stream_);
  } else {
    // An offloaded part (pinned host memory, GPU run): upload it to its place
    // in the slot, then gather in place (the collective reads device memory).
    copy_bytes_async(mine, part, static_cast<size_t>(n) * es, comm_stream_);
    dp_.all_gather(mine, base, static_cast<size_t>(n), dtype_, ctx_.device, comm_stream_);
  }
  if (timeline_) timeline_->end(span, comm_stream_);
  slot.gathered.record(comm_stream_);
  slot.gather_pending = true;
  slot.chunk = c;
  ++gathers_;
}

void ChunkPool::acquire(int c) {
  int s = slot_of(c);
  if (s < 0) {
    s = victim();
    VIT_CHECK(s >= 0, "chunk pool: chunk ", c, " is needed but all ", slots_.size(),
              " slots are in use (a chunk was not released)");
    gather(c, s);
  } else if (!slots_[static_cast<size_t>(s)].reserved && !slots_[static_cast<size_t>(s)].gather_pending) {
    ++hits_;
  }
  Slot& slot = slots_[static_cast<size_t>(s)];
  if (slot.gather_pending) {
    stream_wait_event(ctx_.stream, slot.gathered);
    slot.gather_pending = false;
  }
  slot.in_use = true;
  slot.reserved = false;
}

void ChunkPool::prefetch(int c) {
  if (c < 0 || c >= static_cast<int>(part_.size()) || slot_of(c) >= 0) return;
  const int s = victim();
  if (s < 0) return;  // every slot busy: the gather happens at acquire
  gather(c, s);
  slots_[static_cast<size_t>(s)].reserved = true;
}

void ChunkPool::release(int c) {
  const int s = slot_of(c);
  VIT_CHECK(s >= 0 && slots_[static_cast<size_t>(s)].in_use, "chunk pool: chunk ", c,
            " released but not in use");
  Slot& slot = slots_[static_cast<size_t>(s)];
  slot.in_use = false;
  slot.released.record(ctx_.stream);
  slot.released_once = true;
  slot.last_use = ++tick_;
}

void ChunkPool::invalidate() {
  for (Slot& slot : slots_) {
    VIT_CHECK(!slot.in_use, "chunk pool: invalidated while chunk ", slot.chunk, " is in use");
    if (slot.gather_pending) stream_wait_event(ctx_.stream, slot.gathered);  // nothing left in flight
    slot.gather_pending = false;
    slot.reserved = false;
    slot.chunk = -1;
    slot.last_use = -1;
  }
}

void* ChunkPool::data(int c) const {
  const int s = slot_of(c);
  VIT_CHECK(s >= 0 && slots_[static_cast<size_t>(s)].in_use, "chunk pool: chunk ", c,
            " read while not gathered and acquired");
  return slots_[static_cast<size_t>(s)].buf.data();
}

}  // namespace vit::parallel
