// Loader: one producer thread per Loader, a few short-lived workers per batch.
#include "data/loader.h"

#include <atomic>
#include <chrono>
#include <cstring>

#include "core/error.h"
#include "data/jpeg_codec.h"
#include "data/mix.h"

namespace vit::data {

// What one worker keeps between batches.
struct Loader::WorkerScratch {
  JpegCodec codec;
  std::vector<uint8_t> image;  // (S, S, 3) the stored image before augmentation
  std::vector<uint8_t> aux;    // (S, S, 3) scratch of the augmentation ops
  std::vector<uint8_t> partner;  // (S, S, 3) a mixing partner that another rank holds
};

void Loader::make_image(WorkerScratch& ws, int64_t epoch, int64_t index, uint8_t* out) {
  if (!augment_.per_image()) {
    dataset_.read_image(split_, index, out, &ws.codec);
    return;
  }
  ws.image.resize(image_bytes_);
  ws.aux.resize(image_bytes_);
  dataset_.read_image(split_, index, ws.image.data(), &ws.codec);
  if (augment_.auto_augment == AutoAugmentPolicy::None && augment_.erase_prob <= 0.0f) {
    // Crop and flip alone: resample straight into the batch (today's path).
    crop_resize_flip(ws.image.data(), S_, sample_augmentation(augment_, epoch, index, S_, S_), out);
    return;
  }
  transform_image(augment_, epoch, index, ws.image.data(), out, S_, ws.aux.data());
}

Loader::Loader(const Hdf5Dataset& dataset, std::string split, SamplerOptions sampler, AugmentOptions augment,
               LoaderOptions options)
    : dataset_(dataset),
      split_(std::move(split)),
      sampler_([&] {
        const int64_t n = dataset.size(split_);  // UserError when the split is absent
        if (sampler.dataset_size == 0) sampler.dataset_size = n;
        VIT_CHECK(sampler.dataset_size == n, "sampler dataset_size ", sampler.dataset_size, " but ",
                  dataset.path(), ":/", split_, " holds ", n, " images");
        return DistributedSampler(sampler);
      }()),
      augment_(augment),
      options_(options) {
  VIT_CHECK(options_.prefetch >= 1, "LoaderOptions.prefetch ", options_.prefetch, " must be >= 1");
  VIT_CHECK(options_.threads >= 1, "LoaderOptions.threads ", options_.threads, " must be >= 1");
  S_ = dataset_.info().image_size;
  image_bytes_ = static_cast<size_t>(S_) * S_ * 3;
}

Loader::~Loader() { stop(); }

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (producer_.joinable()) producer_.join();
}

void Loader::start_epoch(int64_t epoch, int64_t first_step) {
  VIT_CHECK(first_step >= 0 && first_step <= sampler_.steps_per_epoch(), "start_epoch: step ", first_step, " of ",
            sampler_.steps_per_epoch());
  stop();
  std::lock_guard<std::mutex> lock(mu_);
  for (Batch& b : ready_) free_.push_back(std::move(b.images));
  ready_.clear();
  error_ = nullptr;
  stop_ = false;
  producing_ = true;
  epoch_wait_ = 0;
  last_wait_ = 0;
  started_ = true;
  // The producer gets its own sampler: DistributedSampler caches and is not thread-safe.
  producer_ = std::thread(&Loader::produce, this, sampler_, epoch, first_step);
}

Buffer Loader::take_buffer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      Buffer b = std::move(free_.back());
      free_.pop_back();
      return b;
    }
  }
  const size_t bytes = static_cast<size_t>(sampler_.options().batch_per_rank) * image_bytes_;
  return Buffer(bytes, Device::CPU, options_.pinned ? HostMemory::Pinned : HostMemory::Pageable);
}

void Loader::fill(Batch& b, const DistributedSampler& sampler, std::vector<WorkerScratch>& scratch, int64_t epoch,
                  int64_t step) {
  b.indices = sampler.rank_indices(epoch, step);
  b.count = static_cast<int64_t>(b.indices.size());
  b.global_count = sampler.global_count(epoch, step);
  b.epoch = epoch;
  b.step = step;
  const std::vector<int64_t>& labels = dataset_.labels(split_);
  b.labels.resize(b.count);
  for (int64_t i = 0; i < b.count; ++i) b.labels[i] = static_cast<int32_t>(labels[b.indices[i]]);

  const int workers = static_cast<int>(std::min<int64_t>(options_.threads, std::max<int64_t>(b.count, 1)));
  if (static_cast<int>(scratch.size()) < workers) scratch.resize(workers);
  std::atomic<int64_t> next_image{0};
  std::vector<std::exception_ptr> errors(workers);
  uint8_t* out = b.images.as<uint8_t>();

  auto work = [&](int w) {
    try {
      WorkerScratch& ws = scratch[w];
      for (int64_t i = next_image.fetch_add(1); i < b.count; i = next_image.fetch_add(1)) {
        make_image(ws, epoch, b.indices[i], out + i * image_bytes_);
      }
    } catch (...) {
      errors[w] = std::current_exception();
    }
  };
  std::vector<std::thread> helpers;
  for (int w = 1; w < workers; ++w) helpers.emplace_back(work, w);
  work(0);
  for (auto& t : helpers) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  b.labels_b.clear();
  b.mix_lambda.clear();
  if (augment_.mixing()) mix_batch(b, sampler, scratch, epoch, step, workers);
}

void Loader::mix_batch(Batch& b, const DistributedSampler& sampler, std::vector<WorkerScratch>& scratch, int64_t epoch,
                       int64_t step, int workers) {
  // The step's global batch in position order: every rank's slice in turn.
  std::vector<int64_t> global;
  int64_t my_begin = 0;
  for (int r = 0; r < sampler.options().dp_size; ++r) {
    if (r == sampler.options().dp_rank) my_begin = static_cast<int64_t>(global.size());
    const std::vector<int64_t> part = sampler.indices_of_rank(epoch, step, r);
    global.insert(global.end(), part.begin(), part.end());
  }
  const int64_t G = static_cast<int64_t>(global.size());
  const std::vector<int64_t>& labels = dataset_.labels(split_);
  // The finished, unmixed images: a partner is mixed from its unmixed self.
  std::vector<uint8_t> clean(static_cast<size_t>(b.count) * image_bytes_);
  uint8_t* out = b.images.as<uint8_t>();
  std::memcpy(clean.data(), out, clean.size());
  b.labels_b.resize(static_cast<size_t>(b.count));
  b.mix_lambda.resize(static_cast<size_t>(b.count));

  std::atomic<int64_t> next_image{0};
  std::vector<std::exception_ptr> errors(workers);
  auto work = [&](int w) {
    try {
      WorkerScratch& ws = scratch[w];
      for (int64_t i = next_image.fetch_add(1); i < b.count; i = next_image.fetch_add(1)) {
        const int64_t g = my_begin + i, pg = mix_partner(g, G);
        const int64_t partner_index = global[static_cast<size_t>(pg)];
        const MixDecision d = sample_mix(augment_, epoch, b.indices[i], S_);
        b.labels_b[i] = static_cast<int32_t>(labels[partner_index]);
        b.mix_lambda[i] = d.lam;
        if (d.mode == MixMode::None || pg == g) {
          b.labels_b[i] = b.labels[i];
          b.mix_lambda[i] = 1.0f;
          continue;
        }
        const uint8_t* partner = nullptr;
        if (pg >= my_begin && pg < my_begin + b.count) {
          partner = clean.data() + (pg - my_begin) * image_bytes_;
        } else {  // another rank holds it: make it here exactly as that rank does
          ws.partner.resize(image_bytes_);
          make_image(ws, epoch, partner_index, ws.partner.data());
          partner = ws.partner.data();
        }
        apply_mix(d, clean.data() + i * image_bytes_, partner, out + i * image_bytes_, S_);
      }
    } catch (...) {
      errors[w] = std::current_exception();
    }
  };
  std::vector<std::thread> helpers;
  for (int w = 1; w < workers; ++w) helpers.emplace_back(work, w);
  work(0);
  for (auto& t : helpers) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

void Loader::produce(DistributedSampler sampler, int64_t epoch, int64_t first_step) {
  std::vector<WorkerScratch> scratch;  // reused by the batches of this epoch
  const int64_t steps = sampler.steps_per_epoch();
  for (int64_t step = first_step; step < steps; ++step) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || static_cast<int>(ready_.size()) < options_.prefetch; });
      if (stop_) return;
    }
    Batch b;
    try {
      b.images = take_buffer();
      fill(b, sampler, scratch, epoch, step);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
      producing_ = false;
      if (!b.images.empty()) free_.push_back(std::move(b.images));
      cv_.notify_all();
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      free_.push_back(std::move(b.images));
      return;
    }
    ready_.push_back(std::move(b));
    cv_.notify_all();
  }
  std::lock_guard<std::mutex> lock(mu_);
  producing_ = false;
  cv_.notify_all();
}

bool Loader::next(Batch& out) {
  VIT_CHECK(started_, "Loader::next() before start_epoch()");
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !ready_.empty() || error_ || !producing_; });
  last_wait_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  epoch_wait_ += last_wait_;
  if (!ready_.empty()) {
    if (!out.images.empty() && out.images.bytes() == static_cast<size_t>(sampler_.options().batch_per_rank) * image_bytes_) {
      free_.push_back(std::move(out.images));
    }
    out = std::move(ready_.front());
    ready_.pop_front();
    cv_.notify_all();
    return true;
  }
  if (error_) std::rethrow_exception(error_);
  return false;
}

}  // namespace vit::data
