// The reader, sampler, augmentation and prefetching loader on real files made
// by vit_data_prep from Beans images (single process; the multi-rank sampler
// test is test_sampler_mpi).
#define BOOST_TEST_MODULE loader
#include <boost/test/unit_test.hpp>

#include <hdf5.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <thread>

#include "core/error.h"
#include "core/rng.h"
#include "data/augment.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "data/sampler.h"
#include "data_prep/prep.h"
#include "data_test_util.h"

using namespace vit_test;
using namespace vit::data;

namespace {

constexpr int kS = 32;

// Two files made once for the whole suite: 10 train images per class (30),
// 2 validation per class, raw and jpeg storage.
struct Files {
  TempDir tmp{"loader"};
  std::string raw, jpeg;
  Files() {
    copy_mini_beans(tmp.path() / "in", {{"train", 10}, {"validation", 2}});
    for (const char* storage : {"raw", "jpeg"}) {
      vit::data_prep::PrepOptions o;
      o.inputs = {tmp.str("in")};
      o.output = tmp.str(std::string(storage) + ".h5");
      o.image_size = kS;
      o.storage = storage;
      o.splits = {"train", "validation"};
      vit::data_prep::prepare_dataset(o);
      (std::string(storage) == "raw" ? raw : jpeg) = o.output;
    }
  }
};
Files& files() {
  static Files f;
  return f;
}

std::string user_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const vit::UserError& e) {
    return e.what();
  }
  return "";
}

std::vector<uint8_t> read(const Hdf5Dataset& ds, const std::string& split, int64_t i) {
  std::vector<uint8_t> px(kS * kS * 3);
  ds.read_image(split, i, px.data());
  return px;
}

}  // namespace

// ---- the reader ---------------------------------------------------------------

BOOST_AUTO_TEST_CASE(open_refuses_what_is_not_a_dataset) {
  TempDir tmp("open");
  std::string msg = user_error_of([&] { Hdf5Dataset::open(tmp.str("missing.h5")); });
  BOOST_TEST(msg.find(tmp.str("missing.h5")) != std::string::npos, msg);
  BOOST_TEST(msg.find("no such file") != std::string::npos, msg);

  write_file(tmp.path() / "text.h5", "hello", 5);
  msg = user_error_of([&] { Hdf5Dataset::open(tmp.str("text.h5")); });
  BOOST_TEST(msg.find("not an HDF5 file") != std::string::npos, msg);

  // A valid HDF5 file that vit_data_prep did not write.
  const hid_t f = H5Fcreate(tmp.str("other.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  BOOST_TEST_REQUIRE(f >= 0);
  H5Fclose(f);
  msg = user_error_of([&] { Hdf5Dataset::open(tmp.str("other.h5")); });
  BOOST_TEST(msg.find("not a vit_data_prep file") != std::string::npos, msg);
}

BOOST_AUTO_TEST_CASE(check_matches_explains_the_mismatch) {
  const Hdf5Dataset ds = Hdf5Dataset::open(files().raw);
  ds.check_matches(kS, 3);  // fits: no throw
  std::string msg = user_error_of([&] { ds.check_matches(224, 3); });
  BOOST_TEST(msg == files().raw + ": image_size is 32 but model.image_size is 224 (re-run vit_data_prep --image-size 224)");
  msg = user_error_of([&] { ds.check_matches(kS, 5); });
  BOOST_TEST(msg.find("has 3 classes (angular_leaf_spot, bean_rust, healthy) but model.num_classes is 5") !=
             std::string::npos, msg);
  msg = user_error_of([&] { ds.size("test"); });
  BOOST_TEST(msg.find("has no split 'test' (it has: train, validation") != std::string::npos, msg);
}

BOOST_AUTO_TEST_CASE(jpeg_and_raw_files_hold_the_same_images) {
  const Hdf5Dataset raw = Hdf5Dataset::open(files().raw), jpg = Hdf5Dataset::open(files().jpeg);
  BOOST_TEST(raw.info().splits.size() == 2u);
  BOOST_TEST(raw.info().splits[0].name == "train");  // the order written
  for (int64_t i = 0; i < raw.size("train"); ++i) {
    const auto a = read(raw, "train", i), b = read(jpg, "train", i);
    double se = 0;
    for (size_t k = 0; k < a.size(); ++k) se += (double(a[k]) - b[k]) * (double(a[k]) - b[k]);
    // Quality-95 4:4:4 JPEG of the same pixels. At 32 px every pixel is
    // detail, so the error is larger than at 224 px: measured 36.0-37.8 dB
    // here; 34 dB keeps a margin while a channel swap, a shift or a wrong
    // image falls to ~10-20 dB.
    BOOST_TEST(10 * std::log10(255.0 * 255.0 * a.size() / std::max(se, 1e-9)) > 34.0);
    BOOST_TEST(raw.file("train", i) == jpg.file("train", i));
  }
}

// ---- the sampler --------------------------------------------------------------

BOOST_AUTO_TEST_CASE(sampler_partitions_every_epoch) {
  for (int64_t n : {1, 7, 18, 100}) {
    for (int64_t batch : {1, 3, 4}) {
      for (int dp : {1, 2, 3, 5}) {
        for (bool drop_last : {false, true}) {
          BOOST_TEST_CONTEXT("n " << n << " batch " << batch << " dp " << dp << " drop_last " << drop_last) {
            std::vector<DistributedSampler> ranks;
            for (int r = 0; r < dp; ++r) ranks.emplace_back(SamplerOptions{n, batch, r, dp, true, drop_last, 11});
            const int64_t g = batch * dp;
            const int64_t steps = ranks[0].steps_per_epoch();
            BOOST_TEST(steps == (drop_last ? n / g : (n + g - 1) / g));
            for (int64_t epoch : {0, 1}) {
              const auto perm = ranks[0].permutation(epoch);
              std::vector<int64_t> joined;
              for (int64_t s = 0; s < steps; ++s) {
                int64_t smallest = batch, largest = 0;
                for (int r = 0; r < dp; ++r) {
                  const auto idx = ranks[r].rank_indices(epoch, s);
                  BOOST_TEST(static_cast<int64_t>(idx.size()) <= batch);
                  smallest = std::min<int64_t>(smallest, idx.size());
                  largest = std::max<int64_t>(largest, idx.size());
                  joined.insert(joined.end(), idx.begin(), idx.end());
                  BOOST_TEST(ranks[r].global_count(epoch, s) == std::min(g, n - s * g));
                }
                BOOST_TEST(largest - smallest <= 1);  // as even as possible
                if (drop_last) BOOST_TEST(smallest == batch);
              }
              // Ranks in order, steps in order = the permutation (without drop_last: all of it).
              BOOST_TEST_REQUIRE(joined.size() == static_cast<size_t>(drop_last ? steps * g : n));
              BOOST_TEST(std::equal(joined.begin(), joined.end(), perm.begin()));
              auto sorted = perm;
              std::sort(sorted.begin(), sorted.end());
              std::vector<int64_t> iota(n);
              std::iota(iota.begin(), iota.end(), int64_t{0});
              BOOST_TEST(sorted == iota);  // a permutation
            }
          }
        }
      }
    }
  }
  // Seeded: same seed same order, other epoch or seed another order, no shuffle = identity.
  const DistributedSampler a({1000, 8, 0, 2, true, false, 5}), b({1000, 8, 1, 2, true, false, 5});
  const DistributedSampler c({1000, 8, 0, 2, true, false, 6}), d({1000, 8, 0, 2, false, false, 5});
  BOOST_TEST(a.permutation(3) == b.permutation(3));
  BOOST_TEST(a.permutation(3) != a.permutation(4));
  BOOST_TEST(a.permutation(3) != c.permutation(3));
  std::vector<int64_t> iota(1000);
  std::iota(iota.begin(), iota.end(), int64_t{0});
  BOOST_TEST(d.permutation(7) == iota);
}

// ---- augmentation -------------------------------------------------------------

BOOST_AUTO_TEST_CASE(random_resized_crop_respects_its_ranges) {
  AugmentOptions o;
  o.enabled = true;
  o.seed = 3;
  int flips = 0, fallbacks = 0;
  const int trials = 4000;
  for (int i = 0; i < trials; ++i) {
    const CropBox b = sample_augmentation(o, 2, i, 224, 224);
    BOOST_TEST_REQUIRE((b.x >= 0 && b.y >= 0 && b.w >= 1 && b.h >= 1 && b.x + b.w <= 224 && b.y + b.h <= 224));
    flips += b.flip;
    const double area = double(b.w) * b.h / (224.0 * 224.0), ratio = double(b.w) / b.h;
    if (b.w == 224 && b.h == 224 && b.x == 0 && b.y == 0) {
      ++fallbacks;
      continue;
    }
    // w and h are rounded to whole pixels: allow that much slack on area and ratio.
    BOOST_TEST(area >= 0.08 * 0.95);
    BOOST_TEST((ratio >= 0.75 * 0.95 && ratio <= 4.0 / 3.0 * 1.05));
    // Deterministic in (seed, epoch, index).
    const CropBox again = sample_augmentation(o, 2, i, 224, 224);
    BOOST_TEST_REQUIRE((again.x == b.x && again.y == b.y && again.w == b.w && again.h == b.h && again.flip == b.flip));
  }
  // Flip probability 1/2: 4000 trials, sd = 31.6; 5 sd either side.
  BOOST_TEST(std::abs(flips - trials / 2) < 160);
  // A full-image crop is rare (area > 0.99 with ratio close to 1, or all 10 tries failing).
  BOOST_TEST(fallbacks < trials / 20);
  // Another epoch: another crop for the same image (almost surely).
  int same = 0;
  for (int i = 0; i < 100; ++i) {
    const CropBox a = sample_augmentation(o, 0, i, 224, 224), b = sample_augmentation(o, 1, i, 224, 224);
    same += a.x == b.x && a.y == b.y && a.w == b.w && a.h == b.h;
  }
  BOOST_TEST(same < 5);
}

BOOST_AUTO_TEST_CASE(crop_resize_matches_double_precision_bilinear) {
  const int S = 40;
  std::vector<uint8_t> src(S * S * 3), dst(src.size());
  vit::Rng rng(9);
  for (auto& v : src) v = static_cast<uint8_t>(rng.below(256));
  for (int t = 0; t < 50; ++t) {
    CropBox b;
    b.w = 1 + static_cast<int>(rng.below(S));
    b.h = 1 + static_cast<int>(rng.below(S));
    b.x = static_cast<int>(rng.below(S - b.w + 1));
    b.y = static_cast<int>(rng.below(S - b.h + 1));
    b.flip = rng.below(2) == 1;
    crop_resize_flip(src.data(), S, b, dst.data());
    int max_diff = 0;
    for (int oy = 0; oy < S; ++oy) {
      for (int ox = 0; ox < S; ++ox) {
        // align_corners = False: source coordinate (o + 0.5) * crop / S - 0.5, clamped to the crop.
        const double sy = std::clamp((oy + 0.5) * b.h / S - 0.5, 0.0, b.h - 1.0);
        const double sx = std::clamp((ox + 0.5) * b.w / S - 0.5, 0.0, b.w - 1.0);
        const int y0 = int(sy), x0 = int(sx), y1 = std::min(y0 + 1, b.h - 1), x1 = std::min(x0 + 1, b.w - 1);
        const double fy = sy - y0, fx = sx - x0;
        for (int c = 0; c < 3; ++c) {
          auto at = [&](int y, int x) { return double(src[((b.y + y) * S + b.x + x) * 3 + c]); };
          const double v = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x1)) + fy * ((1 - fx) * at(y1, x0) + fx * at(y1, x1));
          const int want = int(std::floor(v + 0.5));
          const int out_x = b.flip ? S - 1 - ox : ox;
          max_diff = std::max(max_diff, std::abs(want - int(dst[(oy * S + out_x) * 3 + c])));
        }
      }
    }
    // float32 interpolation may round a value within ~1e-4 of .5 the other way: 1 level.
    BOOST_TEST(max_diff <= 1);
  }
  // The full image unflipped is an exact copy; flipped, an exact mirror.
  crop_resize_flip(src.data(), S, CropBox{0, 0, S, S, false}, dst.data());
  BOOST_TEST((dst == src));
  crop_resize_flip(src.data(), S, CropBox{0, 0, S, S, true}, dst.data());
  BOOST_TEST(dst[0] == src[(S - 1) * 3]);
  BOOST_TEST(dst[(S * 5 + 7) * 3 + 2] == src[(S * 5 + S - 1 - 7) * 3 + 2]);
}

// ---- the loader ---------------------------------------------------------------

namespace {
// Every batch of one epoch: indices, labels and pixels.
struct EpochData {
  std::vector<std::vector<int64_t>> indices;
  std::vector<std::vector<uint8_t>> pixels;  // per batch, count * S*S*3 bytes
  std::vector<int64_t> global_counts;
};
EpochData run_epoch(Loader& loader, int64_t epoch) {
  EpochData d;
  loader.start_epoch(epoch);
  Batch b;
  int64_t step = 0;
  double waits = 0;
  for (;;) {
    // The reported wait lies inside the call as this test times it, and the
    // epoch's wait is the sum of the calls' waits (the last, empty one too).
    const auto t0 = std::chrono::steady_clock::now();
    const bool got = loader.next(b);
    const double call = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    BOOST_TEST(loader.wait_seconds() >= 0.0);
    BOOST_TEST(loader.wait_seconds() <= call);
    waits += loader.wait_seconds();
    if (!got) break;
    BOOST_TEST(b.step == step++);
    BOOST_TEST(b.epoch == epoch);
    BOOST_TEST(b.labels.size() == static_cast<size_t>(b.count));
    d.indices.push_back(b.indices);
    const auto* p = b.images.as<uint8_t>();
    d.pixels.emplace_back(p, p + b.count * kS * kS * 3);
    d.global_counts.push_back(b.global_count);
  }
  BOOST_TEST(loader.epoch_wait_seconds() == waits, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(step == loader.steps_per_epoch());
  return d;
}
}  // namespace

BOOST_AUTO_TEST_CASE(loader_batches_are_the_stored_images) {
  for (const std::string& file : {files().raw, files().jpeg}) {
    const Hdf5Dataset ds = Hdf5Dataset::open(file);
    for (int threads : {1, 3}) {
      BOOST_TEST_CONTEXT(file << " threads " << threads) {
        Loader loader(ds, "train", SamplerOptions{0, 4, 0, 1, true, false, 21}, AugmentOptions{},
                      LoaderOptions{2, threads, true});
        const EpochData e = run_epoch(loader, 0);
        BOOST_TEST(e.indices.size() == 8u);  // 30 images, batch 4, last batch 2
        BOOST_TEST(e.indices.back().size() == 2u);
        std::vector<int64_t> seen;
        for (size_t s = 0; s < e.indices.size(); ++s) {
          for (size_t i = 0; i < e.indices[s].size(); ++i) {
            const int64_t idx = e.indices[s][i];
            seen.push_back(idx);
            const auto want = read(ds, "train", idx);
            BOOST_TEST_REQUIRE(std::equal(want.begin(), want.end(), e.pixels[s].begin() + i * want.size()));
          }
        }
        std::sort(seen.begin(), seen.end());
        BOOST_TEST(seen.size() == 30u);
        BOOST_TEST((std::adjacent_find(seen.begin(), seen.end()) == seen.end()));
        // The next epoch: another order of the same images.
        const EpochData e1 = run_epoch(loader, 1);
        BOOST_TEST(e1.indices != e.indices);
      }
    }
  }
  // Labels are the file's labels.
  const Hdf5Dataset ds = Hdf5Dataset::open(files().raw);
  Loader eval(ds, "validation", SamplerOptions{0, 4, 0, 1, false, false, 0}, AugmentOptions{});
  eval.start_epoch(0);
  Batch b;
  int64_t total = 0;
  while (eval.next(b)) {
    for (int64_t i = 0; i < b.count; ++i) {
      BOOST_TEST(b.indices[i] == total + i);  // eval: file order
      BOOST_TEST(b.labels[i] == ds.label("validation", b.indices[i]));
    }
    total += b.count;
  }
  BOOST_TEST(total == 6);
}

BOOST_AUTO_TEST_CASE(augmented_batches_do_not_depend_on_threads_or_ranks) {
  const Hdf5Dataset ds = Hdf5Dataset::open(files().raw);
  AugmentOptions aug;
  aug.enabled = true;
  aug.seed = 77;
  // One rank, one thread: the reference image of every index.
  Loader one(ds, "train", SamplerOptions{0, 5, 0, 1, true, true, 4}, aug, LoaderOptions{1, 1, false});
  const EpochData ref = run_epoch(one, 3);
  std::map<int64_t, std::vector<uint8_t>> by_index;
  const size_t img = kS * kS * 3;
  for (size_t s = 0; s < ref.indices.size(); ++s)
    for (size_t i = 0; i < ref.indices[s].size(); ++i)
      by_index[ref.indices[s][i]].assign(ref.pixels[s].begin() + i * img, ref.pixels[s].begin() + (i + 1) * img);
  BOOST_TEST(by_index.size() == 30u);
  // Augmentation changed the images (crop of at most the whole, or a flip).
  int changed = 0;
  for (const auto& [idx, px] : by_index) changed += px != read(ds, "train", idx);
  BOOST_TEST(changed >= 25);
  // Two ranks with 3 threads each: every image is byte-identical to the reference.
  for (int r = 0; r < 2; ++r) {
    Loader l(ds, "train", SamplerOptions{0, 2, r, 2, true, false, 4}, aug, LoaderOptions{3, 3, false});
    const EpochData e = run_epoch(l, 3);
    for (size_t s = 0; s < e.indices.size(); ++s) {
      for (size_t i = 0; i < e.indices[s].size(); ++i) {
        const auto& want = by_index.at(e.indices[s][i]);
        BOOST_TEST_REQUIRE(std::equal(want.begin(), want.end(), e.pixels[s].begin() + i * img));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(loader_prefetches_restarts_and_reports_waits) {
  const Hdf5Dataset ds = Hdf5Dataset::open(files().jpeg);
  Loader loader(ds, "train", SamplerOptions{0, 4, 0, 1, true, false, 1}, AugmentOptions{}, LoaderOptions{3, 2, false});
  loader.start_epoch(0);
  // Give the producer time to fill its queue: the consumer should not wait.
  // (3 batches of 4 images at 32 px take milliseconds; 500 ms is ample even
  // on a loaded 2-core machine, and 250 ms of waiting would mean no prefetch.)
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Batch b;
  BOOST_TEST_REQUIRE(loader.next(b));
  BOOST_TEST(loader.wait_seconds() < 0.25);
  BOOST_TEST(b.step == 0);
  // Restart mid-epoch: the queue of epoch 0 is dropped, epoch 5 starts at step 0.
  loader.start_epoch(5);
  BOOST_TEST_REQUIRE(loader.next(b));
  BOOST_TEST((b.epoch == 5 && b.step == 0));
  int64_t n = b.count;
  double waits = loader.wait_seconds();
  while (loader.next(b)) {
    n += b.count;
    waits += loader.wait_seconds();
  }
  waits += loader.wait_seconds();  // the call that found the epoch exhausted
  BOOST_TEST(n == 30);
  // The epoch's wait counts the calls since start_epoch(5) only.
  BOOST_TEST(loader.epoch_wait_seconds() == waits, boost::test_tools::tolerance(1e-9));
  BOOST_TEST(!loader.next(b));  // stays exhausted
}

BOOST_AUTO_TEST_CASE(a_damaged_image_surfaces_in_next) {
  TempDir tmp("damaged");
  const std::string copy = tmp.str("damaged.h5");
  fs::copy_file(files().jpeg, copy);
  {  // overwrite the JPEG bytes of train image 5 with garbage
    const hid_t f = H5Fopen(copy.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    BOOST_TEST_REQUIRE(f >= 0);
    const hid_t d = H5Dopen2(f, "/train/images", H5P_DEFAULT);
    const hid_t t = H5Tvlen_create(H5T_NATIVE_UINT8);
    const hid_t fs_ = H5Dget_space(d);
    const hsize_t start = 5, count = 1;
    H5Sselect_hyperslab(fs_, H5S_SELECT_SET, &start, nullptr, &count, nullptr);
    const hid_t ms = H5Screate_simple(1, &count, nullptr);
    uint8_t junk[100] = {0xff, 0xd8, 0xff};  // a JPEG start, then nothing sensible
    hvl_t vl{sizeof junk, junk};
    BOOST_TEST_REQUIRE(H5Dwrite(d, t, ms, fs_, H5P_DEFAULT, &vl) >= 0);
    H5Sclose(ms);
    H5Sclose(fs_);
    H5Tclose(t);
    H5Dclose(d);
    H5Fclose(f);
  }
  const Hdf5Dataset ds = Hdf5Dataset::open(copy);
  BOOST_TEST(!user_error_of([&] { ds.verify_checksum(); }).empty());
  Loader loader(ds, "train", SamplerOptions{0, 4, 0, 1, false, false, 0}, AugmentOptions{}, LoaderOptions{2, 2, false});
  loader.start_epoch(0);
  Batch b;
  BOOST_TEST(loader.next(b));  // images 0..3 are fine
  const std::string msg = user_error_of([&] {
    while (loader.next(b)) {
    }
  });
  BOOST_TEST(msg.find(copy) != std::string::npos, msg);
  BOOST_TEST(msg.find("/train/images[5]") != std::string::npos, msg);
}
