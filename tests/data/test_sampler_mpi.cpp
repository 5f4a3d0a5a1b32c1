// The distributed sampler and loader across real MPI ranks (ctest runs this
// with 2 and 3 ranks): every index exactly once per epoch over all ranks
// (no drop_last), the same order on every rank, another order next epoch;
// and every rank reading its own slice of one HDF5 file at the same time.
#define BOOST_TEST_MODULE sampler_mpi
#include <boost/test/unit_test.hpp>

#include "common/mpi_main.h"

#include <numeric>

#include "core/rng.h"
#include "data/dataset.h"
#include "data/format.h"
#include "data/loader.h"
#include "data/sampler.h"
#include "data_prep/prep.h"
#include "data_test_util.h"

using namespace vit::data;
using namespace vit_test;

namespace {

// Gathers variable-length int64 vectors from all ranks onto every rank.
std::vector<std::vector<int64_t>> allgather(const std::vector<int64_t>& mine) {
  const int size = vit_mpi_size();
  int n = static_cast<int>(mine.size());
  std::vector<int> counts(size), displs(size);
  MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
  std::partial_sum(counts.begin(), counts.end() - 1, displs.begin() + 1);
  std::vector<int64_t> all(std::accumulate(counts.begin(), counts.end(), 0));
  MPI_Allgatherv(mine.data(), n, MPI_INT64_T, all.data(), counts.data(), displs.data(), MPI_INT64_T, MPI_COMM_WORLD);
  std::vector<std::vector<int64_t>> out(size);
  for (int r = 0; r < size; ++r) out[r].assign(all.begin() + displs[r], all.begin() + displs[r] + counts[r]);
  return out;
}

uint64_t hash_of(const std::vector<int64_t>& v) {
  uint64_t h = format::kFnvOffset;
  for (int64_t x : v) h = format::fnv1a_u64(h, static_cast<uint64_t>(x));
  return h;
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_index_once_per_epoch_across_ranks) {
  const int rank = vit_mpi_rank(), size = vit_mpi_size();
  for (int64_t n : {1034, 133, 128, 5}) {
    for (int64_t batch : {16, 7}) {
      for (bool drop_last : {false, true}) {
        BOOST_TEST_CONTEXT("n " << n << " batch " << batch << " drop_last " << drop_last << " ranks " << size) {
          DistributedSampler s(SamplerOptions{n, batch, rank, size, true, drop_last, 1234});
          const int64_t steps = s.steps_per_epoch();
          // Same step count on every rank (the collectives stay in step).
          int64_t min_steps = 0, max_steps = 0;
          MPI_Allreduce(&steps, &min_steps, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD);
          MPI_Allreduce(&steps, &max_steps, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
          BOOST_TEST(min_steps == max_steps);

          std::vector<uint64_t> epoch_hashes;
          for (int64_t epoch : {0, 1}) {
            // Identical permutation on every rank: compare hashes.
            const uint64_t h = hash_of(s.permutation(epoch));
            uint64_t h_min = 0, h_max = 0;
            MPI_Allreduce(&h, &h_min, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
            MPI_Allreduce(&h, &h_max, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
            BOOST_TEST(h_min == h_max);
            epoch_hashes.push_back(h);

            // Each rank's indices of the epoch, gathered: a partition of the epoch.
            std::vector<int64_t> mine;
            for (int64_t st = 0; st < steps; ++st) {
              const auto idx = s.rank_indices(epoch, st);
              BOOST_TEST(static_cast<int64_t>(idx.size()) <= batch);
              if (drop_last) BOOST_TEST(static_cast<int64_t>(idx.size()) == batch);
              mine.insert(mine.end(), idx.begin(), idx.end());
            }
            const auto all = allgather(mine);
            std::vector<int> seen(n, 0);
            int64_t total = 0;
            for (const auto& r : all) {
              for (int64_t i : r) {
                BOOST_TEST_REQUIRE((i >= 0 && i < n));
                ++seen[i];
              }
              total += static_cast<int64_t>(r.size());
            }
            if (!drop_last) {
              BOOST_TEST(total == n);
              BOOST_TEST(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
            } else {
              BOOST_TEST(total == steps * batch * size);
              BOOST_TEST(std::all_of(seen.begin(), seen.end(), [](int c) { return c <= 1; }));
            }
          }
          if (n > 4) BOOST_TEST(epoch_hashes[0] != epoch_hashes[1]);  // a different order next epoch
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(ranks_load_their_slices_of_one_file) {
  const int rank = vit_mpi_rank(), size = vit_mpi_size();
  // Rank 0 makes the file; everyone opens it read-only at the same time.
  // A failure there (e.g. no Beans images beside the checkout) is broadcast
  // as length -1, so every rank fails at once instead of waiting in the
  // broadcast until ctest's timeout.
  std::unique_ptr<TempDir> tmp;
  std::string path;
  bool made = true;
  if (rank == 0) {
    try {
      tmp = std::make_unique<TempDir>("sampler_mpi");
      copy_mini_beans(tmp->path() / "in", {{"train", 7}});
      vit::data_prep::PrepOptions o;
      o.inputs = {tmp->str("in")};
      o.output = tmp->str("train.h5");
      o.image_size = 24;
      o.splits = {"train"};
      vit::data_prep::prepare_dataset(o);
      path = o.output;
    } catch (const std::exception& e) {
      made = false;
      BOOST_ERROR("rank 0 could not make the test file: " << e.what());
    }
  }
  int len = made ? static_cast<int>(path.size()) : -1;
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  BOOST_TEST_REQUIRE(len >= 0, "rank 0 could not make the test file");
  path.resize(len);
  MPI_Bcast(path.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);

  {
    const Hdf5Dataset ds = Hdf5Dataset::open(path);
    const int64_t n = ds.size("train");
    BOOST_TEST(n == 21);
    AugmentOptions aug;
    aug.enabled = true;
    aug.seed = 8;
    Loader loader(ds, "train", SamplerOptions{0, 2, rank, size, true, false, 99}, aug, LoaderOptions{2, 2, false});
    DistributedSampler reference(SamplerOptions{n, 2, rank, size, true, false, 99});
    loader.start_epoch(2);
    Batch b;
    std::vector<int64_t> mine;
    std::vector<int64_t> digests;  // per image: index, then a hash of its augmented pixels
    int64_t step = 0;
    while (loader.next(b)) {
      BOOST_TEST((b.indices == reference.rank_indices(2, step)));
      BOOST_TEST(b.global_count == reference.global_count(2, step));
      ++step;
      for (int64_t i = 0; i < b.count; ++i) {
        mine.push_back(b.indices[i]);
        BOOST_TEST(b.labels[i] == ds.label("train", b.indices[i]));
        digests.push_back(b.indices[i]);
        digests.push_back(static_cast<int64_t>(
            format::fnv1a(format::kFnvOffset, b.images.as<uint8_t>() + i * 24 * 24 * 3, 24 * 24 * 3)));
      }
    }
    BOOST_TEST(step == reference.steps_per_epoch());
    const auto all = allgather(mine);
    std::vector<int> seen(n, 0);
    for (const auto& r : all)
      for (int64_t i : r) ++seen.at(i);
    BOOST_TEST(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));

    // The augmented pixels of each image equal what one process computes
    // alone (the augmentation depends on (seed, epoch, index) only).
    const auto gathered = allgather(digests);
    Loader single(ds, "train", SamplerOptions{0, 21, 0, 1, false, false, 0}, aug, LoaderOptions{1, 1, false});
    single.start_epoch(2);
    BOOST_TEST_REQUIRE(single.next(b));
    BOOST_TEST_REQUIRE(b.count == 21);
    for (const auto& r : gathered) {
      for (size_t k = 0; k + 1 < r.size(); k += 2) {
        const int64_t idx = r[k];
        const auto h = static_cast<int64_t>(
            format::fnv1a(format::kFnvOffset, b.images.as<uint8_t>() + idx * 24 * 24 * 3, 24 * 24 * 3));
        BOOST_TEST(h == r[k + 1]);
      }
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);  // everyone closed the file before rank 0 removes it
}
