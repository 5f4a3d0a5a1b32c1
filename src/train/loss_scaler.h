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

// Everything a scaler carries from step to step (a checkpoint saves it).
struct LossScalerState {
  double scale = 1.0;
  int64_t clean_steps = 0;   // steps without overflow since the last change
  int overflows_left = 1;    // overflows still tolerated before the next back-off (hysteresis)
  int64_t skipped = 0;       // steps skipped so far
};

class LossScaler {
 public:
  explicit LossScaler(const LossScalerConfig& cfg);
  float scale() const { return static_cast<float>(scale_); }
  // Records the outcome of one step (found_overflow: its gradients held inf/NaN).
  void update(bool found_overflow);
  int64_t skipped_steps() const { return skipped_; }
  bool enabled() const { return cfg_.enabled; }
  // The scale cannot back off any further.
  bool at_min_scale() const { return scale_ <= cfg_.min_scale; }

  LossScalerState state() const { return {scale_, clean_steps_, overflows_left_, skipped_}; }
  void restore(const LossScalerState& s);

 private:
  LossScalerConfig cfg_;
  double scale_;
  int64_t clean_steps_ = 0;
  int overflows_left_;
  int64_t skipped_ = 0;
};

}  // namespace vit::train
