// The prefetching loader: batches of uint8 images for one data-parallel rank.
//
// A background thread assembles the batches of the current epoch, `prefetch`
// ahead of the consumer, while the consumer (the training loop) computes.
// Within a batch, `threads` workers share the images (HDF5 reads serialise
// on the HDF5 lock; JPEG decoding, cropping and flipping run in parallel).
// Each image's augmentation depends only on (seed, epoch, dataset index), so
// a batch's bytes do not depend on thread count or timing.
//
//   Loader loader(dataset, "train", sampler_opts, augment_opts, {2, 4, true});
//   for (epoch...) {
//     loader.start_epoch(epoch);
//     Batch b;
//     while (loader.next(b)) { ... b.images (B, S, S, 3) uint8, first b.count valid ...
//                              metrics.data_wait += loader.wait_seconds(); }
//   }
//
// next() hands the batch over by swapping buffers: the Batch's previous
// images buffer goes back to the loader's pool, so in steady state nothing is
// allocated (important for pinned memory, which is slow to allocate). A Batch
// stays valid until it is passed to next() again. The images buffer always
// has room for batch_per_rank images; count may be smaller (the last step
// without drop_last), even 0: the rank still takes the step.
//
// Images are not normalised: the patchify kernel does (x/255 - 0.5)/0.5.
// Augmentation (augment.h) runs in the workers, image by image; mixup and
// cutmix (mix.h) after all images of the batch are finished, each image with
// its partner in the global batch (read here when another rank holds it).
// Eval: the same Loader with shuffle = false, drop_last = false, augment off.
// Errors in the background thread (a damaged file) are rethrown by next().
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/device.h"
#include "data/augment.h"
#include "data/dataset.h"
#include "data/sampler.h"

namespace vit::data {

struct Batch {
  Buffer images;                  // (batch_per_rank, S, S, 3) uint8, first `count` valid
  std::vector<int32_t> labels;    // (count)
  // With mixup/cutmix (mix.h): image i is mix_lambda[i] of labels[i] and
  // 1 - mix_lambda[i] of labels_b[i]; both empty when mixing is off.
  std::vector<int32_t> labels_b;  // (count)
  std::vector<float> mix_lambda;  // (count)
  std::vector<int64_t> indices;   // (count) dataset indices
  int64_t count = 0;              // images on this rank
  int64_t global_count = 0;       // images in this step over all data-parallel ranks
  int64_t epoch = 0, step = 0;
};

struct LoaderOptions {
  int prefetch = 2;      // batches assembled ahead (>= 1)
  int threads = 1;       // workers per batch (>= 1)
  bool pinned = false;   // page-locked host memory for images (fast host-to-GPU copies)
};

class Loader {
 public:
  // sampler.dataset_size 0 means "the split's size"; any other value must match it.
  Loader(const Hdf5Dataset& dataset, std::string split, SamplerOptions sampler, AugmentOptions augment,
         LoaderOptions options = {});
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  const DistributedSampler& sampler() const { return sampler_; }
  int64_t steps_per_epoch() const { return sampler_.steps_per_epoch(); }

  // Starts (or restarts) producing `epoch` from its step `first_step` (a
  // resumed run continues mid-epoch); a running epoch is abandoned.
  void start_epoch(int64_t epoch, int64_t first_step = 0);
  // The next batch of the epoch; false once the epoch is exhausted.
  bool next(Batch& out);
  // Seconds the last next() waited for its batch (0 when it was ready).
  double wait_seconds() const { return last_wait_; }
  // Seconds waited in all next() calls of this epoch.
  double epoch_wait_seconds() const { return epoch_wait_; }

 private:
  void stop();
  struct WorkerScratch;
  void produce(DistributedSampler sampler, int64_t epoch, int64_t first_step);
  void fill(Batch& b, const DistributedSampler& sampler, std::vector<WorkerScratch>& scratch, int64_t epoch,
            int64_t step);
  // Mixup/cutmix of b's finished images (mix.h); runs the same workers.
  void mix_batch(Batch& b, const DistributedSampler& sampler, std::vector<WorkerScratch>& scratch, int64_t epoch,
                 int64_t step, int workers);
  // Image `index` of the split as the workers make it (read, augmented).
  void make_image(WorkerScratch& ws, int64_t epoch, int64_t index, uint8_t* out);
  Buffer take_buffer();

  Hdf5Dataset dataset_;
  std::string split_;
  DistributedSampler sampler_;
  AugmentOptions augment_;
  LoaderOptions options_;
  int S_ = 0;
  size_t image_bytes_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> ready_;      // produced, not yet handed out
  std::vector<Buffer> free_;     // image buffers to reuse
  bool stop_ = false;
  bool producing_ = false;       // the producer has steps left
  std::exception_ptr error_;
  std::thread producer_;
  bool started_ = false;
  double last_wait_ = 0, epoch_wait_ = 0;
};

}  // namespace vit::data
