#include "kernels/profile.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "core/error.h"

namespace vit::kernels {

#ifdef VIT_WITH_CUDA
// profile_cuda.cpp: timing events.
void* profile_event_create();
void profile_event_destroy(void* e);
void profile_event_record(void* e, void* stream);
float profile_elapsed_ms(void* start, void* end);
#endif

struct OpProfiler::Record {
  const char* name = nullptr;
  Device device = Device::CPU;
  void* stream = nullptr;
  double bytes = 0.0;
  void* start = nullptr;  // GPU events (created once, reused)
  void* stop = nullptr;
  std::chrono::steady_clock::time_point t0, t1;  // CPU
};

OpProfiler& OpProfiler::instance() {
  static OpProfiler p;
  return p;
}

OpProfiler::~OpProfiler() {
#ifdef VIT_WITH_CUDA
  for (Record* r : records_) {
    if (r->start) profile_event_destroy(r->start);
    if (r->stop) profile_event_destroy(r->stop);
  }
#endif
  for (Record* r : records_) delete r;
}

void OpProfiler::enable(bool on) {
  enabled_ = on;
  depth_ = 0;
}

int OpProfiler::begin(const char* name, Device device, void* stream, double bytes) {
  if (depth_++ > 0) return -1;  // inside another op: counted there
  if (used_ == records_.size()) records_.push_back(new Record());
  Record& r = *records_[used_];
  r.name = name;
  r.device = device;
  r.stream = stream;
  r.bytes = bytes;
  if (device == Device::CUDA) {
#ifdef VIT_WITH_CUDA
    if (!r.start) r.start = profile_event_create();
    if (!r.stop) r.stop = profile_event_create();
    profile_event_record(r.start, stream);
#endif
  } else {
    r.t0 = std::chrono::steady_clock::now();
  }
  return static_cast<int>(used_++);
}

void OpProfiler::end(int token) {
  --depth_;
  if (token < 0) return;
  Record& r = *records_[static_cast<size_t>(token)];
  if (r.device == Device::CUDA) {
#ifdef VIT_WITH_CUDA
    // Recorded on the stream the op began on: the op's last work is there.
    profile_event_record(r.stop, r.stream);
#endif
  } else {
    r.t1 = std::chrono::steady_clock::now();
  }
}

std::vector<OpTime> OpProfiler::collect() {
  std::map<std::string, OpTime> sums;
  for (size_t i = 0; i < used_; ++i) {
    const Record& r = *records_[i];
    double ms = 0.0;
    if (r.device == Device::CUDA) {
#ifdef VIT_WITH_CUDA
      ms = profile_elapsed_ms(r.start, r.stop);
#endif
    } else {
      ms = std::chrono::duration<double, std::milli>(r.t1 - r.t0).count();
    }
    OpTime& t = sums[r.name];
    t.name = r.name;
    t.ms += ms;
    t.bytes += r.bytes;
    ++t.calls;
  }
  used_ = 0;
  std::vector<OpTime> out;
  for (auto& [name, t] : sums) out.push_back(t);
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.ms > b.ms; });
  return out;
}

}  // namespace vit::kernels
