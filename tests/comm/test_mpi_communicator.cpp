// MpiCommunicator on host memory, under mpirun with 2, 3 and 4 ranks.
//
// Every rank builds every rank's input from one seed and checks its own
// result against a locally computed reference (collective_problem.h). The
// inputs make fp32 reductions exact, so results are compared BIT FOR BIT
// (tolerance 0): the MPI communicator reduces bf16/fp16 in fp32 and rounds
// once, exactly as the reference does. The one test on random normals uses
// the recursive-summation error bound instead.
#define BOOST_TEST_MODULE comm_mpi
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "collective_problem.h"
#include "comm/mpi_communicator.h"
#include "common/mpi_main.h"
#include "core/error.h"

using namespace vit;
using namespace vit::comm;
using namespace vit::comm::testing;

namespace {

// Small chunks (4 KiB) so that the chunked paths (all_reduce, broadcast,
// send/recv) cut even modest buffers into many pieces.
constexpr size_t kSmallChunk = 4096;

uint64_t fnv1a(const void* data, size_t bytes) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace

BOOST_AUTO_TEST_CASE(identity_and_duplicated_communicator) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  BOOST_TEST(comm.rank() == vit_mpi_rank());
  BOOST_TEST(comm.size() == vit_mpi_size());
  BOOST_TEST(std::string(comm.backend()) == "mpi");
  int same = MPI_UNEQUAL;
  MPI_Comm_compare(comm.comm(), MPI_COMM_WORLD, &same);
  BOOST_TEST(same == MPI_CONGRUENT);  // a duplicate: same ranks, separate message space
}

BOOST_AUTO_TEST_CASE(all_reduce_every_dtype_and_op_is_exact) {
  for (size_t chunk : {MpiCommunicator::kDefaultChunkBytes, kSmallChunk}) {
    MpiCommunicator comm(MPI_COMM_WORLD, chunk);
    for (DType dtype : kAllDTypes) {
      for (ReduceOp op : kAllOps) {
        for (size_t count : {size_t{1}, size_t{7}, size_t{1031}, size_t{100003}}) {
          BOOST_TEST_CONTEXT(describe(dtype, op, count) << " chunk " << chunk) {
            const uint64_t seed = mix_seed(11, static_cast<uint64_t>(dtype), static_cast<uint64_t>(op), count);
            std::vector<unsigned char> buf = encode(exact_input(seed, comm.rank(), count), dtype);
            comm.all_reduce(buf.data(), count, dtype, op, Device::CPU);
            const Reduction ref = reduce_reference(seed, comm.size(), count, dtype, op);
            BOOST_TEST(first_mismatch(decode(buf.data(), count, dtype), ref.expected) == -1);
          }
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(all_reduce_fp32_random_is_within_bound_identical_on_all_ranks_and_reproducible) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  const size_t count = 4099;
  std::vector<std::vector<float>> inputs(comm.size(), std::vector<float>(count));
  for (int r = 0; r < comm.size(); ++r) {
    Rng rng(mix_seed(12, r));
    for (float& x : inputs[r]) x = static_cast<float>(rng.normal() * 3.0);
  }
  std::vector<float> first = inputs[comm.rank()];
  std::vector<float> second = inputs[comm.rank()];
  comm.all_reduce(first.data(), count, DType::F32, ReduceOp::Sum, Device::CPU);
  comm.all_reduce(second.data(), count, DType::F32, ReduceOp::Sum, Device::CPU);
  // Every rank must hold the same bits (data-parallel replicas must not
  // drift apart): compare a hash of the result across ranks.
  const uint64_t mine = fnv1a(first.data(), count * 4);
  std::vector<uint64_t> all(comm.size());
  MPI_Allgather(&mine, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
  for (int r = 0; r < comm.size(); ++r) BOOST_TEST(all[r] == mine);
  BOOST_TEST(std::memcmp(first.data(), second.data(), count * 4) == 0);  // same layout, same bits
  // Recursive summation of n terms in fp32: |error| <= (n-1) * 2^-24 * sum|x| (to first order).
  const long bad = first_mismatch(first, [&] {
    std::vector<float> exact(count);
    for (size_t i = 0; i < count; ++i) {
      double s = 0;
      for (int r = 0; r < comm.size(); ++r) s += inputs[r][i];
      exact[i] = static_cast<float>(s);
    }
    return exact;
  }(), [&](size_t i) {
    double sum_abs = 0;
    for (int r = 0; r < comm.size(); ++r) sum_abs += std::fabs(inputs[r][i]);
    return static_cast<float>(comm.size() * 0x1.0p-24 * sum_abs);  // (n-1) terms + rounding of the reference
  });
  BOOST_TEST(bad == -1);
}

BOOST_AUTO_TEST_CASE(reduce_scatter_every_dtype_and_op_out_of_place_and_in_place) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  const int n = comm.size(), me = comm.rank();
  for (DType dtype : kAllDTypes) {
    const size_t es = dtype_size(dtype);
    for (ReduceOp op : kAllOps) {
      for (size_t recv_count : {size_t{1}, size_t{37}, size_t{1031}}) {
        BOOST_TEST_CONTEXT(describe(dtype, op, recv_count)) {
          const size_t total = recv_count * n;
          const uint64_t seed = mix_seed(13, static_cast<uint64_t>(dtype), static_cast<uint64_t>(op), recv_count);
          const Reduction ref = reduce_reference(seed, n, total, dtype, op);
          const std::vector<float> my_block(ref.expected.begin() + me * recv_count,
                                            ref.expected.begin() + (me + 1) * recv_count);
          const std::vector<unsigned char> send = encode(exact_input(seed, me, total), dtype);
          std::vector<unsigned char> recv(recv_count * es, 0xAB);
          comm.reduce_scatter(send.data(), recv.data(), recv_count, dtype, op, Device::CPU);
          BOOST_TEST(first_mismatch(decode(recv.data(), recv_count, dtype), my_block) == -1);
          // In place, NCCL's convention: recv is block `rank` of send.
          std::vector<unsigned char> inplace = send;
          unsigned char* block = inplace.data() + me * recv_count * es;
          comm.reduce_scatter(inplace.data(), block, recv_count, dtype, op, Device::CPU);
          BOOST_TEST(first_mismatch(decode(block, recv_count, dtype), my_block) == -1);
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(all_gather_is_bitwise_in_rank_order_out_of_place_and_in_place) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  const int n = comm.size(), me = comm.rank();
  for (DType dtype : kAllDTypes) {
    const size_t es = dtype_size(dtype);
    for (size_t send_count : {size_t{1}, size_t{13}, size_t{1031}}) {
      BOOST_TEST_CONTEXT(dtype_name(dtype) << " send_count " << send_count) {
        const uint64_t seed = mix_seed(14, static_cast<uint64_t>(dtype), send_count);
        std::vector<unsigned char> expected;
        for (int r = 0; r < n; ++r) {
          const std::vector<unsigned char> block = encode(exact_input(seed, r, send_count), dtype);
          expected.insert(expected.end(), block.begin(), block.end());
        }
        const std::vector<unsigned char> mine = encode(exact_input(seed, me, send_count), dtype);
        std::vector<unsigned char> recv(n * send_count * es, 0xCD);
        comm.all_gather(mine.data(), recv.data(), send_count, dtype, Device::CPU);
        BOOST_TEST(recv == expected);
        std::vector<unsigned char> inplace(n * send_count * es, 0xCD);
        std::memcpy(inplace.data() + me * send_count * es, mine.data(), mine.size());
        comm.all_gather(inplace.data() + me * send_count * es, inplace.data(), send_count, dtype, Device::CPU);
        BOOST_TEST(inplace == expected);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(broadcast_from_every_kind_of_root) {
  for (size_t chunk : {MpiCommunicator::kDefaultChunkBytes, kSmallChunk}) {
    MpiCommunicator comm(MPI_COMM_WORLD, chunk);
    const int n = comm.size();
    for (int root : {0, n - 1, n / 2}) {
      for (DType dtype : kAllDTypes) {
        for (size_t count : {size_t{1}, size_t{1031}, size_t{100003}}) {
          BOOST_TEST_CONTEXT(dtype_name(dtype) << " root " << root << " count " << count << " chunk " << chunk) {
            const uint64_t seed = mix_seed(15, static_cast<uint64_t>(dtype), count);
            // Non-roots start with their own (different) data: it must be overwritten.
            std::vector<unsigned char> buf = encode(exact_input(seed, comm.rank(), count), dtype);
            comm.broadcast(buf.data(), count, dtype, root, Device::CPU);
            BOOST_TEST(buf == encode(exact_input(seed, root, count), dtype));
          }
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(send_recv_ring_with_uneven_counts) {
  MpiCommunicator comm(MPI_COMM_WORLD, kSmallChunk);
  const int n = comm.size(), me = comm.rank();
  const int next = (me + 1) % n, prev = (me + n - 1) % n;
  // Rank r sends 1000 + 3001*r fp16 values: the counts differ per rank and
  // span several 4 KiB chunks.
  auto count_of = [](int r) { return size_t{1000} + size_t{3001} * r; };
  const uint64_t seed = 16;
  const std::vector<unsigned char> mine = encode(exact_input(seed, me, count_of(me)), DType::F16);
  std::vector<unsigned char> got(count_of(prev) * 2, 0);
  // Blocking calls in an order that cannot deadlock: even ranks send first.
  if (me % 2 == 0) {
    comm.send(mine.data(), count_of(me), DType::F16, next, Device::CPU);
    comm.recv(got.data(), count_of(prev), DType::F16, prev, Device::CPU);
  } else {
    comm.recv(got.data(), count_of(prev), DType::F16, prev, Device::CPU);
    comm.send(mine.data(), count_of(me), DType::F16, next, Device::CPU);
  }
  BOOST_TEST(got == encode(exact_input(seed, prev, count_of(prev)), DType::F16));

  // The same ring as one simultaneous shift, the other way round.
  std::vector<unsigned char> shifted(count_of(next) * 2, 0);
  comm.send_recv(mine.data(), count_of(me), prev, shifted.data(), count_of(next), next, DType::F16, Device::CPU);
  BOOST_TEST(shifted == encode(exact_input(seed, next, count_of(next)), DType::F16));
}

BOOST_AUTO_TEST_CASE(send_recv_chain_with_open_ends_like_a_pipeline) {
  MpiCommunicator comm(MPI_COMM_WORLD, kSmallChunk);
  const int n = comm.size(), me = comm.rank();
  const int next = me + 1 < n ? me + 1 : -1, prev = me > 0 ? me - 1 : -1;
  const size_t count = 2500;  // 10000 bytes: 3 chunks
  const std::vector<unsigned char> mine = encode(exact_input(17, me, count), DType::F32);
  std::vector<unsigned char> got(count * 4, 0x5A);
  comm.send_recv(mine.data(), count, next, got.data(), count, prev, DType::F32, Device::CPU);
  if (prev == -1) {
    BOOST_TEST(got == std::vector<unsigned char>(count * 4, 0x5A));  // the first stage receives nothing
  } else {
    BOOST_TEST(got == encode(exact_input(17, prev, count), DType::F32));
  }
}

BOOST_AUTO_TEST_CASE(barrier_orders_a_side_effect) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  // Rank 0 creates a file only after a pause; every rank looks for it right
  // after the barrier. Without a real barrier the others would look first.
  char path[256] = {};
  if (comm.rank() == 0) std::snprintf(path, sizeof(path), "%s/comm_barrier_%d", VIT_BINARY_DIR, (int)getpid());
  MPI_Bcast(path, sizeof(path), MPI_CHAR, 0, MPI_COMM_WORLD);
  std::remove(path);
  MPI_Barrier(MPI_COMM_WORLD);
  if (comm.rank() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    std::ofstream(path) << "rank 0 was here\n";
  }
  comm.barrier();
  BOOST_TEST(std::ifstream(path).good());
  MPI_Barrier(MPI_COMM_WORLD);
  if (comm.rank() == 0) std::remove(path);
}

BOOST_AUTO_TEST_CASE(bad_peers_and_roots_throw_on_every_rank) {
  MpiCommunicator comm(MPI_COMM_WORLD);
  float x[4] = {1, 2, 3, 4};
  BOOST_CHECK_THROW(comm.broadcast(x, 4, DType::F32, comm.size(), Device::CPU), vit::Error);
  BOOST_CHECK_THROW(comm.broadcast(x, 4, DType::F32, -1, Device::CPU), vit::Error);
  BOOST_CHECK_THROW(comm.send(x, 4, DType::F32, comm.size(), Device::CPU), vit::Error);
  BOOST_CHECK_THROW(comm.send(x, 4, DType::F32, comm.rank(), Device::CPU), vit::Error);
  BOOST_CHECK_THROW(comm.recv(x, 4, DType::F32, -2, Device::CPU), vit::Error);
  BOOST_CHECK_THROW(comm.send_recv(x, 2, comm.size(), x + 2, 2, 0, DType::F32, Device::CPU), vit::Error);
  BOOST_CHECK_THROW(MpiCommunicator(MPI_COMM_WORLD, size_t{6}), vit::Error);  // chunk not a multiple of 4
  // The communicator still works after the refused calls.
  comm.all_reduce(x, 4, DType::F32, ReduceOp::Max, Device::CPU);
  BOOST_TEST(x[3] == 4.0f);
}
