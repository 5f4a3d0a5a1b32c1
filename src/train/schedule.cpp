#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace vit::train {

Schedule parse_schedule(const std::string& name) {
  if (name == "cosine") return Schedule::Cosine;
  if (name == "linear") return Schedule::Linear;
  if (name == "constant") return Schedule::Constant;
  VIT_THROW("unknown schedule '", name, "' (allowed: cosine, linear, constant)");
}

LrSchedule::LrSchedule(double base_lr, int64_t total_steps, double warmup_ratio, Schedule kind)
    : base_(base_lr),
      total_(std::max<int64_t>(1, total_steps)),
      warmup_(static_cast<int64_t>(std::ceil(warmup_ratio * static_cast<double>(total_steps)))),
      kind_(kind) {}

double LrSchedule::at(int64_t step) const {
  if (kind_ == Schedule::Constant) return base_;
  if (step <= warmup_) return base_ * static_cast<double>(step) / static_cast<double>(warmup_);
  const double span = static_cast<double>(std::max<int64_t>(1, total_ - warmup_));
  const double progress = std::min(1.0, static_cast<double>(step - warmup_) / span);
  if (kind_ == Schedule::Linear) return base_ * (1.0 - progress);
  return base_ * 0.5 * (1.0 + std::cos(M_PI * progress));
}

}  // namespace vit::train
