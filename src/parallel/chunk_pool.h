// The chunk pool of gemini (ZeRO-3): a few fixed slots, each able to hold one
// whole parameter chunk (compute dtype, padded as in the chunks'
// BucketLayout) gathered from the parts every data-parallel rank keeps.
//
// A chunk is used between acquire(c) and release(c) on the compute stream.
// acquire gathers it into a slot unless a slot still holds it, and makes the
// compute stream wait for that gather; prefetch(c) queues the gather of a
// chunk that will be used next, so it runs on the communication stream while
// the compute stream works on the current one. A released chunk stays in its
// slot (a later acquire of the same chunk costs nothing: the head's chunk is
// used by forward and at once by backward) until the slot is taken for
// another chunk, least recently used first. Ordering, all by events:
//   gather of c into slot s  waits for s's last release (its readers are done)
//                            and for whatever the communication stream was
//                            told to wait for (the optimizer's update);
//   compute using c          waits for c's gather.
// invalidate() forgets every resident copy (after the parameters changed).
// A gather guard (set_gather_guard) runs on the host before each gather of a
// chunk is queued: gemini waits there for that chunk's pending CPU update and
// makes the communication stream wait for its upload, so a chunk whose update
// is still running is never read while the others go ahead.
//
// A gather: the rank's part goes from where it lives (device memory, or
// pinned host memory for offloaded parameters, uploaded first) into its place
// in the slot, then an all-gather fills in the other ranks' parts. Every rank
// must make the same calls in the same order (they are collectives); the
// pool's decisions depend only on that sequence, so the ranks agree.
//
// On the CPU (MPI) every step is synchronous and the events are no-ops.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/context.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/stream.h"
#include "parallel/bucket_layout.h"

namespace vit::comm {
class Communicator;
}

namespace vit::parallel {

class ChunkTimeline;

class ChunkPool {
 public:
  // chunks: one bucket per chunk; dtype: the compute dtype; comm_stream: the
  // stream the gathers are queued on (cudaStream_t; the owner orders its own
  // collectives on the same one). slots >= 1; prefetch needs 2 or more.
  ChunkPool(const BucketLayout& chunks, comm::Communicator& dp, const Context& ctx, DType dtype, int slots,
            void* comm_stream);

  // Where this rank's part of chunk c lives (part_size(c) elements of the
  // compute dtype); set before the first gather, kept by the owner.
  void set_part(int c, const void* part, Device where);
  // Gathers are recorded there while it is on (not owned; may be null).
  void set_timeline(ChunkTimeline* timeline) { timeline_ = timeline; }
  // Called with c before every gather of chunk c is queued (empty: none).
  void set_gather_guard(std::function<void(int c)> guard) { guard_ = std::move(guard); }

  void acquire(int c);   // resident and ready for the compute stream; in use until release
  void prefetch(int c);  // queue its gather if it is not resident and a slot is free
  void release(int c);   // the compute stream's queued work is the last use for now
  void invalidate();     // every copy is stale; the compute stream waits for gathers in flight
  // Chunk c's gathered values (padded_size elements); it must be in use.
  void* data(int c) const;

  int slots() const { return static_cast<int>(slots_.size()); }
  size_t slot_bytes() const;
  int64_t gathers() const { return gathers_; }  // all-gathers issued so far
  int64_t hits() const { return hits_; }        // acquires served by a resident copy

 private:
  struct Slot {
    Buffer buf;
    int chunk = -1;
    bool in_use = false, reserved = false;  // reserved: prefetched, not acquired yet
    bool released_once = false, gather_pending = false;
    int64_t last_use = -1;
    Event gathered, released;
  };
  int slot_of(int c) const;
  int victim() const;  // a slot neither in use nor reserved, least recently used; -1 if none
  void gather(int c, int s);

  const BucketLayout& chunks_;
  comm::Communicator& dp_;
  Context ctx_;
  DType dtype_;
  void* comm_stream_;
  std::vector<Slot> slots_;
  std::vector<const void*> part_;
  std::vector<Device> part_where_;
  int64_t tick_ = 0, gathers_ = 0, hits_ = 0;
  ChunkTimeline* timeline_ = nullptr;
  std::function<void(int)> guard_;
};

}  // namespace vit::parallel
