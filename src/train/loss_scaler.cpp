#include "train/loss_scaler.h"

#include <algorithm>

namespace vit::train {

LossScaler::LossScaler(const LossScalerConfig& cfg)
    : cfg_(cfg), scale_(cfg.enabled ? cfg.initial_scale : 1.0), overflows_left_(std::max(1, cfg.hysteresis)) {}

void LossScaler::restore(const LossScalerState& s) {
  scale_ = s.scale;
  clean_steps_ = s.clean_steps;
  overflows_left_ = s.overflows_left;
  skipped_ = s.skipped;
}

void LossScaler::update(bool found_overflow) {
  if (!cfg_.enabled) return;
  if (found_overflow) {
    ++skipped_;
    clean_steps_ = 0;
    if (--overflows_left_ <= 0) {
      scale_ = std::max(cfg_.min_scale, scale_ * cfg_.backoff_factor);
      overflows_left_ = std::max(1, cfg_.hysteresis);
    }
    return;
  }
  if (++clean_steps_ >= cfg_.growth_interval) {
    scale_ = std::min(cfg_.max_scale, scale_ * cfg_.growth_factor);
    clean_steps_ = 0;
    overflows_left_ = std::max(1, cfg_.hysteresis);
  }
}

}  // namespace vit::train
