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
  extras_ = model::TrainExtras();
  extras_.noise_key = mb.noise_key;
  extras_.first_sample = mb.first_sample;
  VIT_CHECK((mb.labels_b == nullptr) == (mb.mix_lambda == nullptr),
            "micro-batch: labels_b and mix_lambda come together (one is given, the other not)");
  if (mb.labels_b != nullptr) {
    const size_t bytes = static_cast<size_t>(max_batch_) * 4;
    if (labels_b_.empty()) {
      labels_b_ = Buffer(bytes, ctx_.device);
      lambda_ = Buffer(bytes, ctx_.device);
    }
    copy_bytes_async(labels_b_.data(), mb.labels_b, static_cast<size_t>(mb.count) * 4, ctx_.stream);
    copy_bytes_async(lambda_.data(), mb.mix_lambda, static_cast<size_t>(mb.count) * 4, ctx_.stream);
    extras_.labels_b = Tensor(labels_b_.data(), DType::I32, ctx_.device, {mb.count});
    extras_.lambda = Tensor(lambda_.data(), DType::F32, ctx_.device, {mb.count});
  }
}

}  // namespace vit::parallel
