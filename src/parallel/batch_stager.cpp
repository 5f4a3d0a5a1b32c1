#include "parallel/batch_stager.h"

#include "core/error.h"
#include "core/stream.h"
#include "parallel/plugin.h"

namespace vit::parallel {

BatchStager::BatchStager(const model::ViTConfig& cfg, const Context& ctx, int max_batch)
    : cfg_(cfg),
      ctx_(ctx),
      max_batch_(max_batch),
      image_bytes_(static_cast<size_t>(cfg.image_size) * cfg.image_size * cfg.channels),
      images_(image_bytes_ * static_cast<size_t>(max_batch), ctx.device),
      labels_(static_cast<size_t>(max_batch) * sizeof(int32_t), ctx.device) {}

void BatchStager::stage(const MicroBatch& mb, Tensor* images, Tensor* labels) {
  VIT_CHECK(mb.count >= 1 && mb.count <= max_batch_, "micro-batch of ", mb.count, " images; the plugin was built for ",
            max_batch_);
  void* img = mb.on_device ? const_cast<uint8_t*>(mb.images) : images_.data();
  if (!mb.on_device) copy_bytes_async(images_.data(), mb.images, image_bytes_ * static_cast<size_t>(mb.count), ctx_.stream);
  copy_bytes_async(labels_.data(), mb.labels, static_cast<size_t>(mb.count) * sizeof(int32_t), ctx_.stream);
  *images = Tensor(img, DType::U8, ctx_.device, {mb.count, cfg_.image_size, cfg_.image_size, cfg_.channels});
  *labels = Tensor(labels_.data(), DType::I32, ctx_.device, {mb.count});
}

}  // namespace vit::parallel
