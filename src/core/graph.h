// Replaying a stretch of GPU work as a CUDA graph.
//
// A training step on one GPU launches some 450 kernels; launched one by one,
// each costs the GPU a gap while the next is fetched, which at batch 32 adds
// up to a few percent of the step. GraphCache::run() takes that stretch as a
// function and a key that names everything the function's launches depend
// on beyond memory that lives as long as the cache's owner (the batch
// buffers, the batch size, the loss-gradient scale):
//   - the first time a key comes, the work runs eagerly (every lazy
//     allocation, plan and heuristic is made then, outside any capture);
//   - the second time, it is captured on the stream into a graph and the
//     graph is launched (capture itself runs nothing);
//   - from then on the graph is launched.
// The key also holds device_frees() (core/device.h): once any GPU buffer
// has been freed, e.g. a workspace that grew, no graph captured before is
// replayed again (its pointers may be stale); the work runs eagerly once
// more and is captured anew. Graphs are kept for the last `capacity` keys.
//
// If capture fails (some call in the work cannot be captured), the cache
// turns itself off for good, `note()` says why, and the work runs eagerly:
// `redo` is called first so that the owner can undo the host-side
// bookkeeping the aborted capture pass did. The work must not depend on
// host state that changes between calls with the same key (host scalars
// passed to kernels belong in the key).
//
// On the CPU, or in a build without CUDA, run() simply calls the work.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace vit {

class GraphCache {
 public:
  explicit GraphCache(size_t capacity = 4) : capacity_(capacity) {}
  ~GraphCache();
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;

  // `stream` is a cudaStream_t (null: the CPU; the work just runs).
  void run(std::vector<uint64_t> key, void* stream, const std::function<void()>& work,
           const std::function<void()>& redo);

  bool off() const { return off_; }
  const std::string& note() const { return note_; }
  // Counts since construction, for the benchmark's log and the tests.
  int64_t eager_runs() const { return eager_; }
  int64_t captures() const { return captures_; }
  int64_t replays() const { return replays_; }
  void clear();  // drops every graph (the next runs are eager, then captured again)

 private:
  struct Entry {
    std::vector<uint64_t> key;
    void* exec = nullptr;  // cudaGraphExec_t; null: seen once, not captured
  };
  size_t capacity_;
  std::vector<Entry> entries_;  // most recent last
  bool off_ = false;
  std::string note_;
  int64_t eager_ = 0, captures_ = 0, replays_ = 0;
};

}  // namespace vit
