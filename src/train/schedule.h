// Learning-rate schedule, stepped per optimizer step (DESIGN.md section 7):
// linear warm-up over warmup_ratio of all steps, then cosine (or linear)
// decay to 0, or constant.
#pragma once

#include <cstdint>
#include <string>

namespace vit::train {

enum class Schedule { Cosine, Linear, Constant };
Schedule parse_schedule(const std::string& name);

class LrSchedule {
 public:
  LrSchedule(double base_lr, int64_t total_steps, double warmup_ratio, Schedule kind);
  // Learning rate for optimizer step `step` (1-based): step 1 of a warm-up
  // of W steps uses base/W, step W uses base.
  double at(int64_t step) const;
  int64_t warmup_steps() const { return warmup_; }

 private:
  double base_;
  int64_t total_, warmup_;
  Schedule kind_;
};

}  // namespace vit::train
