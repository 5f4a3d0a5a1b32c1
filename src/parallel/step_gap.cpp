#include "parallel/step_gap.h"

#include <algorithm>
#include <utility>

#include "core/error.h"
#include "parallel/timing_event.h"

namespace vit::parallel {

StepGapMeter::StepGapMeter(Device device) {
#ifdef VIT_WITH_CUDA
  gpu_ = device == Device::CUDA;
  if (gpu_) {
    begin_ = timeline_event_create();
    end_ = timeline_event_create();
    prev_end_ = timeline_event_create();
  }
#else
  (void)device;
#endif
}

StepGapMeter::~StepGapMeter() {
#ifdef VIT_WITH_CUDA
  for (void* e : {begin_, end_, prev_end_})
    if (e) timeline_event_destroy(e);
#endif
}

void StepGapMeter::mark(void* event, bool& marked, void* stream) {
#ifdef VIT_WITH_CUDA
  if (!gpu_) return;
  timeline_event_record(event, stream);
  marked = true;
#else
  (void)event, (void)marked, (void)stream;
#endif
}

void StepGapMeter::collect() {
#ifdef VIT_WITH_CUDA
  if (!gpu_ || !began_ || !ended_) return;
  if (have_prev_) gaps_ms_.push_back(timeline_event_ms(prev_end_, begin_));
  std::swap(prev_end_, end_);
  have_prev_ = true;
  began_ = ended_ = false;
#endif
}

std::string StepGapMeter::summary() const {
  if (gaps_ms_.empty()) return "";
  std::vector<float> g = gaps_ms_;
  std::sort(g.begin(), g.end());
  const float median = g[g.size() / 2], p10 = g[g.size() / 10], p90 = g[(g.size() * 9) / 10];
  return str_cat("GPU idle between steps (host turnaround): median ", static_cast<int>(median * 1000.0f + 0.5f),
                 " us (p10 ", static_cast<int>(p10 * 1000.0f + 0.5f), ", p90 ", static_cast<int>(p90 * 1000.0f + 0.5f),
                 ") over ", g.size(), " gaps");
}

}  // namespace vit::parallel
