// Dynamic loss scaling for fp16 (as torch.cuda.amp.GradScaler and
// Colossal-AI's DynamicGradScaler): the loss gradient is multiplied by
// `scale`; a step whose gradients overflow is skipped and counted; after
// `hysteresis` overflows the scale is multiplied by backoff_factor; after
// growth_interval clean steps in a row it is multiplied by growth_factor.
// The scale stays within [min_scale, max_scale].
#pragma once

#include <cstdint>

namespace vit::train {

struct LossScalerConfig {
  bool enabled = false;  // only for fp16; bf16 and fp32 keep scale 1
  double initial_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 1000;
  int hysteresis = 2;
  double min_scale = 1.0;
  double max_scale = 4294967296.0;
};

class LossScaler {
 public:
  explicit LossScaler(const LossScalerConfig& cfg);
  float scale() const { return static_cast<float>(scale_); }
  // Records the outcome of one step (found_overflow: its gradients held inf/NaN).
  void update(bool found_overflow);
  int64_t skipped_steps() const { return skipped_; }

 private:
  LossScalerConfig cfg_;
  double scale_;
  int64_t clean_steps_ = 0;
  int overflows_left_;
  int64_t skipped_ = 0;
};

}  // namespace vit::train
