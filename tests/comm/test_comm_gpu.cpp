// The communicators on GPU memory (run by the lead on the GPU machine; here
// gpu_main.h reports "Skipped").
//
//   mpirun -np 1: make_communicator gives NCCL (a one-rank NCCL world).
//   mpirun -np 2 on one GPU: the ranks share it, make_communicator gives
//     MPI with host staging, ONE warning is printed, and every result must
//     be the one two GPUs would give (the references below do not depend on
//     the backend).
//   mpirun -np 2 on two GPUs: NCCL with two ranks.
// Each rank also runs a one-rank NCCL communicator over MPI_COMM_SELF (two
// processes may each own a one-rank NCCL communicator on the same GPU) and
// the MPI communicator on device memory with small chunks.
//
// Data moves the way the trainer moves it: uploaded with cudaMemcpyAsync on
// a non-blocking stream, the collective called on that stream, downloaded on
// it. The MPI communicator must therefore synchronise the stream first, or
// it would stage stale data.
// Tolerances: the MPI backend reduces in fp32 and rounds once, so it is
// compared bit for bit; NCCL rounds in the dtype at each step and gets
// reduction_tolerance() (exact too for 1 or 2 ranks in practice, with these
// inputs). Data movement (all_gather, broadcast, send/recv) is bitwise.
#define BOOST_TEST_MODULE comm_gpu
#include <boost/test/unit_test.hpp>

#include "common/gpu_main.h"  // first: skip before MPI starts when there is no GPU
#include "common/mpi_main.h"

#include <memory>
#include <string>

#include "collective_problem.h"
#include "comm/bootstrap.h"
#include "comm/gpu_runtime.h"
#include "comm/mpi_communicator.h"
#include "comm/process_mesh.h"
#include "core/device.h"

#ifdef VIT_WITH_CUDA
#include <cuda_runtime.h>

#include "comm/nccl_communicator.h"
#include "core/cuda_check.h"
#endif

using namespace vit;
using namespace vit::comm;
using namespace vit::comm::testing;

namespace {

// A non-blocking CUDA stream (nullptr in a CPU build, where nothing runs).
struct Stream {
  void* handle = nullptr;
  Stream() {
#ifdef VIT_WITH_CUDA
    cudaStream_t s;
    VIT_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    handle = s;
#endif
  }
  ~Stream() {
#ifdef VIT_WITH_CUDA
    cudaStreamDestroy(static_cast<cudaStream_t>(handle));
#endif
  }
};

// Host bytes -> a fresh device buffer, asynchronously on the stream (from
// pinned memory, so the copy really is asynchronous).
void upload_async(Buffer& pinned, Buffer& dev, const std::vector<unsigned char>& bytes, void* stream) {
  pinned = Buffer(bytes.size(), Device::CPU, HostMemory::Pinned);
  std::memcpy(pinned.data(), bytes.data(), bytes.size());
  dev = Buffer(bytes.size(), Device::CUDA);
#ifdef VIT_WITH_CUDA
  VIT_CUDA_CHECK(cudaMemcpyAsync(dev.data(), pinned.data(), bytes.size(), cudaMemcpyHostToDevice,
                                 static_cast<cudaStream_t>(stream)));
#else
  (void)stream;
#endif
}

std::vector<unsigned char> download(const void* dev, size_t bytes, void* stream) {
  gpu::synchronize_stream(stream);  // the collective may still be queued on it (NCCL)
  std::vector<unsigned char> out(bytes);
  copy_bytes(out.data(), Device::CPU, dev, Device::CUDA, bytes);
  return out;
}

// Every collective of `c` on device memory against the local references.
void check_collectives_on_device(Communicator& c, const std::string& label) {
  Stream stream;
  const int n = c.size(), me = c.rank();
  const bool exact = std::string(c.backend()) == "mpi" || n <= 1;
  for (DType dtype : kAllDTypes) {
    const size_t es = dtype_size(dtype);
    for (ReduceOp op : kAllOps) {
      for (size_t count : {size_t{1}, size_t{1031}, size_t{100003}}) {
        BOOST_TEST_CONTEXT(label << " all_reduce " << describe(dtype, op, count)) {
          const uint64_t seed = mix_seed(21, static_cast<uint64_t>(dtype), static_cast<uint64_t>(op), count);
          Buffer pinned, dev;
          upload_async(pinned, dev, encode(exact_input(seed, me, count), dtype), stream.handle);
          c.all_reduce(dev.data(), count, dtype, op, Device::CUDA, stream.handle);
          const std::vector<float> got = decode(download(dev.data(), count * es, stream.handle).data(), count, dtype);
          const Reduction ref = reduce_reference(seed, n, count, dtype, op);
          BOOST_TEST(first_mismatch(got, ref.expected, [&](size_t i) {
                       return exact ? 0.0f : reduction_tolerance(dtype, op, n, ref.sum_abs[i], ref.expected[i]);
                     }) == -1);
        }
      }
      const size_t recv_count = 1031;
      BOOST_TEST_CONTEXT(label << " reduce_scatter " << describe(dtype, op, recv_count)) {
        const uint64_t seed = mix_seed(22, static_cast<uint64_t>(dtype), static_cast<uint64_t>(op));
        const size_t total = recv_count * n;
        const Reduction ref = reduce_reference(seed, n, total, dtype, op);
        Buffer pinned, dev;
        upload_async(pinned, dev, encode(exact_input(seed, me, total), dtype), stream.handle);
        Buffer out(recv_count * es, Device::CUDA);
        c.reduce_scatter(dev.data(), out.data(), recv_count, dtype, op, Device::CUDA, stream.handle);
        // ... and in place, into block `me` of the input itself.
        char* block = dev.as<char>() + me * recv_count * es;
        c.reduce_scatter(dev.data(), block, recv_count, dtype, op, Device::CUDA, stream.handle);
        for (const void* result : {static_cast<const void*>(out.data()), static_cast<const void*>(block)}) {
          const std::vector<float> got =
              decode(download(result, recv_count * es, stream.handle).data(), recv_count, dtype);
          BOOST_TEST(first_mismatch(got, std::vector<float>(ref.expected.begin() + me * recv_count,
                                                            ref.expected.begin() + (me + 1) * recv_count),
                                    [&](size_t i) {
                                      const size_t g = me * recv_count + i;
                                      return exact ? 0.0f
                                                   : reduction_tolerance(dtype, op, n, ref.sum_abs[g],
                                                                         ref.expected[g]);
                                    }) == -1);
        }
      }
    }
    const size_t count = 1031;
    BOOST_TEST_CONTEXT(label << " all_gather / broadcast / send_recv " << dtype_name(dtype)) {
      const uint64_t seed = mix_seed(23, static_cast<uint64_t>(dtype));
      std::vector<unsigned char> gathered;
      for (int r = 0; r < n; ++r) {
        const std::vector<unsigned char> b = encode(exact_input(seed, r, count), dtype);
        gathered.insert(gathered.end(), b.begin(), b.end());
      }
      Buffer pinned, dev;
      upload_async(pinned, dev, encode(exact_input(seed, me, count), dtype), stream.handle);
      Buffer all(n * count * es, Device::CUDA);
      c.all_gather(dev.data(), all.data(), count, dtype, Device::CUDA, stream.handle);
      BOOST_TEST(download(all.data(), all.bytes(), stream.handle) == gathered);
      // In place: our block already sits at offset `me`.
      Buffer inplace(n * count * es, Device::CUDA);
      copy_bytes(inplace.as<char>() + me * count * es, Device::CUDA, dev.data(), Device::CUDA, count * es);
      c.all_gather(inplace.as<char>() + me * count * es, inplace.data(), count, dtype, Device::CUDA,
                   stream.handle);
      BOOST_TEST(download(inplace.data(), inplace.bytes(), stream.handle) == gathered);

      const int root = n - 1;
      c.broadcast(dev.data(), count, dtype, root, Device::CUDA, stream.handle);
      BOOST_TEST(download(dev.data(), count * es, stream.handle) == encode(exact_input(seed, root, count), dtype));

      // Ring shift (a self-exchange on one rank).
      upload_async(pinned, dev, encode(exact_input(seed, me, count), dtype), stream.handle);
      Buffer got(count * es, Device::CUDA);
      c.send_recv(dev.data(), count, (me + 1) % n, got.data(), count, (me + n - 1) % n, dtype, Device::CUDA,
                  stream.handle);
      BOOST_TEST(download(got.data(), count * es, stream.handle) ==
                 encode(exact_input(seed, (me + n - 1) % n, count), dtype));
      if (n > 1) {  // blocking-order point to point: even ranks send first
        const int next = (me + 1) % n, prev = (me + n - 1) % n;
        if (me % 2 == 0) {
          c.send(dev.data(), count, dtype, next, Device::CUDA, stream.handle);
          c.recv(got.data(), count, dtype, prev, Device::CUDA, stream.handle);
        } else {
          c.recv(got.data(), count, dtype, prev, Device::CUDA, stream.handle);
          c.send(dev.data(), count, dtype, next, Device::CUDA, stream.handle);
        }
        BOOST_TEST(download(got.data(), count * es, stream.handle) == encode(exact_input(seed, prev, count), dtype));
      }
    }
  }
  c.barrier();
}

WorldInfo& world() {
  static WorldInfo info = bootstrap_world("cuda");
  return info;
}

}  // namespace

BOOST_AUTO_TEST_CASE(bootstrap_picks_a_gpu_and_sees_sharing) {
  const WorldInfo& info = world();
  BOOST_TEST(info.use_gpu);
  BOOST_TEST(info.gpu_index == info.local_rank % cuda_device_count());
  BOOST_TEST(gpu::current_device() == info.gpu_index);
  // Plain mpirun (no per-rank CUDA_VISIBLE_DEVICES): shared iff more ranks than GPUs.
  BOOST_TEST(info.gpus_shared == (info.local_size > cuda_device_count()));
}

BOOST_AUTO_TEST_CASE(default_communicator_on_device) {
  auto c = make_communicator(MPI_COMM_WORLD, world());
  BOOST_TEST(std::string(c->backend()) == (world().gpus_shared ? "mpi" : "nccl"));
  BOOST_TEST(c->size() == world().size);
  check_collectives_on_device(*c, std::string("world/") + c->backend());
}

BOOST_AUTO_TEST_CASE(mpi_communicator_stages_device_memory) {
  MpiCommunicator c(MPI_COMM_WORLD, 4096);  // small chunks: many staging round trips
  check_collectives_on_device(c, "mpi-staged");
}

BOOST_AUTO_TEST_CASE(single_rank_nccl_and_its_host_fallback) {
#ifdef VIT_WITH_CUDA
  NcclCommunicator c(MPI_COMM_SELF);
  BOOST_TEST(c.size() == 1);
  BOOST_TEST(c.gpu_index() == world().gpu_index);
  check_collectives_on_device(c, "nccl-self");
  // Host pointers go to the MPI communicator inside.
  std::vector<unsigned char> host = encode(exact_input(24, 0, 1031), DType::BF16);
  const std::vector<unsigned char> before = host;
  c.all_reduce(host.data(), 1031, DType::BF16, ReduceOp::Avg, Device::CPU);
  BOOST_TEST(host == before);  // the average over one rank is the input
#endif
}

BOOST_AUTO_TEST_CASE(nccl_world_host_fallback) {
#ifdef VIT_WITH_CUDA
  if (world().gpus_shared) return;  // NCCL over the world is impossible here; covered by the MPI cases
  NcclCommunicator c(MPI_COMM_WORLD);
  const size_t count = 1031;
  std::vector<unsigned char> host = encode(exact_input(25, c.rank(), count), DType::F32);
  c.all_reduce(host.data(), count, DType::F32, ReduceOp::Sum, Device::CPU);
  BOOST_TEST(first_mismatch(decode(host.data(), count, DType::F32),
                            reduce_reference(25, c.size(), count, DType::F32, ReduceOp::Sum).expected) == -1);
#endif
}

BOOST_AUTO_TEST_CASE(process_mesh_on_gpu) {
  const WorldInfo& info = world();
  ProcessMesh mesh(MPI_COMM_WORLD, info, info.size, 1);  // all ranks in one tp group
  const char* expected = info.gpus_shared ? "mpi" : "nccl";
  BOOST_TEST(std::string(mesh.tp_comm().backend()) == expected);
  BOOST_TEST(mesh.tp_comm().size() == info.size);
  check_collectives_on_device(mesh.tp_comm(), std::string("mesh-tp/") + expected);
}
