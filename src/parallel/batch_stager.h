// Batch staging: a rank's micro-batch from host memory to where the model
// runs, asynchronously on the compute stream (pinned host memory makes the
// copy a true DMA; the loader pins its batches on GPU runs). Images that
// already live on the device (benchmark data) are used in place.
#pragma once

#include <cstdint>

#include "core/context.h"
#include "core/device.h"
#include "core/tensor.h"
#include "model/config.h"

namespace vit::parallel {

struct MicroBatch;

class BatchStager {
 public:
  BatchStager(const model::ViTConfig& cfg, const Context& ctx, int max_batch);
  // Queues the copies; returns the device views (valid until the next stage()).
  void stage(const MicroBatch& mb, Tensor* images, Tensor* labels);
  int max_batch() const { return max_batch_; }

 private:
  model::ViTConfig cfg_;
  Context ctx_;
  int max_batch_;
  size_t image_bytes_;
  Buffer images_, labels_;
};

}  // namespace vit::parallel
