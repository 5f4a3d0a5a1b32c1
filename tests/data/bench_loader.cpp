// Loader throughput on a vit_data_prep file (not a test: a measurement).
//
//   bench_loader FILE.h5 [split=train] [batch=64] [threads=2] [augment=0] [epochs=2]
//
// Prints images/s of a consumer that does nothing but take batches, i.e. the
// rate at which the loader can feed a trainer, and the time it waited.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "data/dataset.h"
#include "data/loader.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE.h5 [split] [batch] [threads] [augment] [epochs]\n", argv[0]);
    return 2;
  }
  const std::string split = argc > 2 ? argv[2] : "train";
  const int batch = argc > 3 ? std::atoi(argv[3]) : 64;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 2;
  const bool augment = argc > 5 && std::atoi(argv[5]) != 0;
  const int epochs = argc > 6 ? std::atoi(argv[6]) : 2;
  try {
    const auto ds = vit::data::Hdf5Dataset::open(argv[1]);
    vit::data::AugmentOptions aug;
    aug.enabled = augment;
    vit::data::Loader loader(ds, split, {0, batch, 0, 1, true, false, 1}, aug, {2, threads, false});
    const auto t0 = std::chrono::steady_clock::now();
    int64_t images = 0;
    double waited = 0;
    for (int e = 0; e < epochs; ++e) {
      loader.start_epoch(e);
      vit::data::Batch b;
      while (loader.next(b)) images += b.count;
      waited += loader.epoch_wait_seconds();
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s %s: storage %s, %d px, batch %d, threads %d, augment %d: %lld images in %.2f s = %.0f images/s "
                "(consumer waited %.2f s)\n", argv[1], split.c_str(), ds.info().storage.c_str(), ds.info().image_size,
                batch, threads, augment ? 1 : 0, static_cast<long long>(images), s, images / s, waited);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: %s\n", e.what());
    return 1;
  }
  return 0;
}
