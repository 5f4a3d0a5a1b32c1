#include "parallel/chunk_timeline.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "parallel/timing_event.h"

namespace vit::parallel {

ChunkTimeline::ChunkTimeline(Device device) : device_(device) {}

ChunkTimeline::~ChunkTimeline() {
#ifdef VIT_WITH_CUDA
  for (void* e : events_) timeline_event_destroy(e);
#endif
}

double ChunkTimeline::host_now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - host_origin_).count();
}

int ChunkTimeline::event(void* stream) {
#ifdef VIT_WITH_CUDA
  if (used_ == static_cast<int>(events_.size())) events_.push_back(timeline_event_create());
  timeline_event_record(events_[static_cast<size_t>(used_)], stream);
  return used_++;
#else
  (void)stream;
  VIT_THROW("GPU timeline events in a build without CUDA");
#endif
}

void ChunkTimeline::begin_step(void* stream) {
  on_ = true;
  spans_.clear();
  used_ = 0;
  host_origin_ = std::chrono::steady_clock::now();
  origin_ = device_ == Device::CUDA ? event(stream) : -1;
}

int ChunkTimeline::begin(const char* stream_name, const char* what, int chunk, void* stream) {
  if (!on_) return -1;
  Span s;
  s.stream = stream_name;
  s.what = what;
  s.chunk = chunk;
  if (device_ == Device::CUDA) {
    s.ev_begin = event(stream);
  } else {
    s.host = true;
    s.t_begin = host_now();
  }
  spans_.push_back(s);
  return static_cast<int>(spans_.size()) - 1;
}

void ChunkTimeline::end(int span, void* stream) {
  if (!on_ || span < 0) return;
  Span& s = spans_[static_cast<size_t>(span)];
  if (device_ == Device::CUDA) {
    s.ev_end = event(stream);
  } else {
    s.t_end = host_now();
  }
}

int ChunkTimeline::host_begin(const char* what, int chunk) {
  if (!on_) return -1;
  Span s;
  s.stream = "host";
  s.what = what;
  s.chunk = chunk;
  s.host = true;
  s.t_begin = host_now();
  spans_.push_back(s);
  return static_cast<int>(spans_.size()) - 1;
}

void ChunkTimeline::host_end(int span) {
  if (!on_ || span < 0) return;
  spans_[static_cast<size_t>(span)].t_end = host_now();
}

void ChunkTimeline::host_span(const char* what, int chunk, std::chrono::steady_clock::time_point begin,
                              std::chrono::steady_clock::time_point end) {
  if (!on_) return;
  Span s;
  s.stream = "host";
  s.what = what;
  s.chunk = chunk;
  s.host = true;
  s.t_begin = std::chrono::duration<double>(begin - host_origin_).count();
  s.t_end = std::chrono::duration<double>(end - host_origin_).count();
  spans_.push_back(s);
}

std::string ChunkTimeline::report() const {
  struct Row {
    double b, e;
    const Span* s;
  };
  std::vector<Row> rows;
  for (const Span& s : spans_) {
    double b = s.t_begin * 1e3, e = s.t_end * 1e3;
#ifdef VIT_WITH_CUDA
    if (!s.host) {
      void* o = events_[static_cast<size_t>(origin_)];
      b = timeline_event_ms(o, events_[static_cast<size_t>(s.ev_begin)]);
      e = s.ev_end >= 0 ? timeline_event_ms(o, events_[static_cast<size_t>(s.ev_end)]) : b;
    }
#endif
    rows.push_back({b, e, &s});
  }
  std::stable_sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.b < b.b; });
  std::string out = str_cat("# one training step, ", spans_.size(), " spans; ms from the step's start (",
                            device_ == Device::CUDA ? "GPU spans: the first work on the compute stream; host spans: "
                                                      "the host's step start"
                                                    : "host clock",
                            "; host work of the previous step that overlaps this one may start below 0)\n"
                            "# begin_ms end_ms duration_ms stream what chunk\n");
  char line[160];
  for (const Row& r : rows) {
    std::snprintf(line, sizeof(line), "%9.3f %9.3f %8.3f %-8s %-22s %d\n", r.b, r.e, r.e - r.b, r.s->stream,
                  r.s->what, r.s->chunk);
    out += line;
  }
  return out;
}

}  // namespace vit::parallel
