// Batch staging: a rank's micro-batch from host memory to where the model
// runs, asynchronously on the compute stream (pinned host memory makes the
// copy a true DMA; the loader pins its batches on GPU runs). Images that
// already live on the device (benchmark data) are used in place.
//
// A training micro-batch's extras (second labels and their shares for
// mixup/cutmix, the noise key of its masks) are staged with it; extras()
// hands them to the model (ViTModel::set_train_extras) in the form it takes.
#pragma once

#include <cstdint>

#include "core/context.h"
#include "core/device.h"
#include "core/tensor.h"
#include "model/config.h"
#include "model/vit.h"

namespace vit::parallel {

struct MicroBatch;

class BatchStager {
 public:
  BatchStager(const model::ViTConfig& cfg, const Context& ctx, int max_batch);
  // Queues the copies; returns the device views (valid until the next stage()).
  void stage(const MicroBatch& mb, Tensor* images, Tensor* labels);
  int max_batch() const { return max_batch_; }
  // The extras of the last stage()d micro-batch on the device (valid until
  // the next stage()); empty tensors and key 0 where it had none.
  const model::TrainExtras& extras() const { return extras_; }

 private:
  model::ViTConfig cfg_;
  Context ctx_;
  int max_batch_;
  size_t image_bytes_;
  Buffer images_, labels_;
  Buffer labels_b_, lambda_;  // allocated on first use
  model::TrainExtras extras_;
};

}  // namespace vit::parallel
