// A per-chunk timeline of one training step (gemini in benchmark mode): when
// each chunk's gather, forward, backward, reduce-scatter, gradient download,
// CPU AdamW and upload ran, on which stream, so that what overlaps can be
// read off.
//
// GPU spans are timed by CUDA events recorded on the stream that runs the
// work (timing events, unlike core/stream.h's, which are created without
// timing to stay cheap), relative to an origin event recorded on the compute
// stream when the step begins; host spans (the CPU AdamW) by the host clock
// relative to the host's step start. The two origins differ by the host's
// lead over the GPU, so host and GPU times line up only roughly. On the CPU
// everything runs in order on the host and is timed by the host clock.
//
// Host work may cross the step's bounds: gemini's CPU AdamW of a step runs
// on a worker thread while the next step's forward goes on. A step's
// timeline therefore shows the previous step's updates (named "... (prev
// step)"), which may begin before this step did (negative times), beside
// this step's own ones, which end after its forward and backward; host_span
// adds such a span from time points the worker took, whatever the timeline
// was doing then.
// report() reads the events: call it after the streams were synchronised.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "core/device.h"

namespace vit::parallel {

class ChunkTimeline {
 public:
  explicit ChunkTimeline(Device device);
  ~ChunkTimeline();
  ChunkTimeline(const ChunkTimeline&) = delete;
  ChunkTimeline& operator=(const ChunkTimeline&) = delete;

  bool on() const { return on_; }
  // Starts recording this step (forgets the last one); origin on `stream`.
  void begin_step(void* stream);
  void stop() { on_ = false; }
  // A span of GPU (or, on the CPU, host) work on `stream`: begin and end are
  // recorded where the stream is at the call. `stream_name` and `what` must
  // be string literals (kept by pointer).
  int begin(const char* stream_name, const char* what, int chunk, void* stream);
  void end(int span, void* stream);
  // A span of host work, timed by the host clock.
  int host_begin(const char* what, int chunk);
  void host_end(int span);
  // A finished span of host work between two host time points (before the
  // step began: negative times).
  void host_span(const char* what, int chunk, std::chrono::steady_clock::time_point begin,
                 std::chrono::steady_clock::time_point end);
  // One line per span, by start time.
  std::string report() const;

 private:
  struct Span {
    const char* stream = "";
    const char* what = "";
    int chunk = -1;
    bool host = false;
    int ev_begin = -1, ev_end = -1;  // GPU events (indices into events_)
    double t_begin = 0, t_end = 0;   // host seconds from the host origin
  };
  int event(void* stream);  // a timing event recorded on `stream` (reused across steps)
  double host_now() const;

  Device device_;
  bool on_ = false;
  std::vector<void*> events_;  // cudaEvent_t, created with timing
  int used_ = 0;
  int origin_ = -1;
  std::chrono::steady_clock::time_point host_origin_;
  std::vector<Span> spans_;
};

}  // namespace vit::parallel
