// How long the GPU waits for the host between training steps.
//
// A step ends with one host synchronisation (the loss and gradient norm are
// read back); the host then does its bookkeeping, stages the next batch and
// launches the next step. Meanwhile the GPU has nothing queued. The meter
// records a timing event on the compute stream where a step's work ends
// (before the synchronisation) and one where the next step's first work is
// queued; the time between the two, on the GPU's clock, is that idle gap
// (an evaluation or a checkpoint between two steps shows as a long gap; the
// summary's median ignores them). GPU only: on the CPU it does nothing.
#pragma once

#include <string>
#include <vector>

#include "core/device.h"

namespace vit::parallel {

class StepGapMeter {
 public:
  explicit StepGapMeter(Device device);
  ~StepGapMeter();
  StepGapMeter(const StepGapMeter&) = delete;
  StepGapMeter& operator=(const StepGapMeter&) = delete;

  void step_begin(void* stream) { mark(begin_, began_, stream); }  // before the step's first launch
  void step_end(void* stream) { mark(end_, ended_, stream); }  // after its last launch, before the synchronisation
  void collect();                 // after the synchronisation: this step's gap
  // "GPU idle between steps: median 41 us, ..." or "" (CPU, or fewer than 2 steps).
  std::string summary() const;

 private:
  void mark(void* event, bool& marked, void* stream);  // records `event` on the GPU
  bool gpu_ = false;
  void* begin_ = nullptr;     // cudaEvent_t of this step's begin
  void* end_ = nullptr;       // ... of this step's end
  void* prev_end_ = nullptr;  // ... of the last step's end
  bool have_prev_ = false, began_ = false, ended_ = false;
  std::vector<float> gaps_ms_;
};

}  // namespace vit::parallel
