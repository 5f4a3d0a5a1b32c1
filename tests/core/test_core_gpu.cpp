// Device memory promises of core, on the GPU (skipped, visibly, without one).
//
// 1. copy_bytes and Buffer::zero are complete when they return: a kernel
//    queued at once on a non-blocking stream (where every op of vit_hpc
//    runs) reads the new contents. Issue 8's all-zero logits came from
//    breaking this: cudaMemcpy from pageable memory returns before its DMA
//    lands, on the legacy stream that non-blocking streams do not wait for,
//    so the cast that read the uploaded weights sometimes read fresh,
//    zero-filled memory. The first case also shows the hazard with a plain
//    cudaMemcpy (printed, not asserted: it is timing-dependent).
// 2. Memory allocated from a thread other than the one that chose the GPU
//    (the loader's producer thread pins its batches) lands on the chosen GPU,
//    not on GPU 0 (needs two GPUs; skipped with a message on one).
#define BOOST_TEST_MODULE core_gpu
#include <boost/test/unit_test.hpp>

#include "common/gpu_main.h"

#include <cstdio>
#include <thread>
#include <vector>

#ifdef VIT_WITH_CUDA  // a CPU build compiles the skip alone
#include "core/cuda_check.h"
#include "core/device.h"
#include "core/tensor.h"
#include "kernels/cast.h"
#include "kernels/gpu_context.h"

using namespace vit;

namespace {

// Counts elements of `dev` (fp32, on the GPU) that differ from `want`,
// after the GPU copied `dev` into `out` on the runtime's non-blocking stream.
// `out` is allocated by the caller beforehand: cudaMalloc may synchronise the
// device and so hide the very race this looks for.
size_t mismatches_after_stream_copy(GpuRuntime& gpu, const Buffer& dev, Buffer& out, const std::vector<float>& want) {
  const int64_t n = static_cast<int64_t>(want.size());
  kernels::cast(gpu.context(), tensor_of(out, DType::F32, {n}), tensor_of(const_cast<Buffer&>(dev), DType::F32, {n}));
  gpu.synchronize();
  std::vector<float> got(want.size());
  copy_bytes(got.data(), Device::CPU, out.data(), Device::CUDA, out.bytes());
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) bad += got[i] != want[i];
  return bad;
}

}  // namespace

BOOST_AUTO_TEST_CASE(uploads_and_zeroing_are_complete_when_they_return) {
  GpuRuntime gpu(0, false);
  // 256 MiB of pageable memory: the staged copy's last chunks are still in
  // flight when a plain cudaMemcpy returns.
  const size_t n = size_t(64) << 20;
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>(i % 1000003) + 0.5f;
  std::vector<float> zeros(n, 0.0f);
  const int trials = 5;
  size_t raw_bad = 0;
  Buffer out(n * 4, Device::CUDA);
  for (int t = 0; t < trials; ++t) {
    Buffer dev(n * 4, Device::CUDA);
    // Zeros first, so a stale read cannot find the last trial's data there.
    VIT_CUDA_CHECK(cudaMemset(dev.data(), 0, n * 4));
    VIT_CUDA_CHECK(cudaDeviceSynchronize());
    VIT_CUDA_CHECK(cudaMemcpy(dev.data(), host.data(), n * 4, cudaMemcpyHostToDevice));  // the old way
    raw_bad += mismatches_after_stream_copy(gpu, dev, out, host);
  }
  std::printf("plain cudaMemcpy then a kernel on a non-blocking stream: %zu of %zu elements read stale "
              "(over %d trials; timing-dependent, shown, not asserted)\n",
              raw_bad, n * trials, trials);
  for (int t = 0; t < trials; ++t) {
    Buffer dev(n * 4, Device::CUDA);
    VIT_CUDA_CHECK(cudaMemset(dev.data(), 0, n * 4));
    VIT_CUDA_CHECK(cudaDeviceSynchronize());
    copy_bytes(dev.data(), Device::CUDA, host.data(), Device::CPU, n * 4);
    BOOST_TEST(mismatches_after_stream_copy(gpu, dev, out, host) == 0u, "copy_bytes, trial " << t);
    dev.zero();
    BOOST_TEST(mismatches_after_stream_copy(gpu, dev, out, zeros) == 0u, "Buffer::zero, trial " << t);
    // Device to device: cudaMemcpy returns at once for these.
    Buffer other(n * 4, Device::CUDA);
    VIT_CUDA_CHECK(cudaMemset(other.data(), 0, n * 4));
    copy_bytes(dev.data(), Device::CUDA, host.data(), Device::CPU, n * 4);
    copy_bytes(other.data(), Device::CUDA, dev.data(), Device::CUDA, n * 4);
    BOOST_TEST(mismatches_after_stream_copy(gpu, other, out, host) == 0u, "device-to-device copy_bytes, trial " << t);
  }
}

BOOST_AUTO_TEST_CASE(other_threads_allocate_on_the_chosen_gpu) {
  if (cuda_device_count() < 2) {
    std::printf("SKIPPED (this case): one GPU visible; allocations on a second GPU need two\n");
    BOOST_TEST_MESSAGE("one GPU: nothing to check");
    return;
  }
  const int chosen = cuda_device_count() - 1;
  GpuRuntime gpu(chosen, false);
  BOOST_TEST(home_gpu() == chosen);
  int device_of_buffer = -1, device_of_pinned = -1, thread_current = -1;
  std::thread worker([&] {
    // A new host thread starts on GPU 0.
    Buffer dev(1 << 20, Device::CUDA);
    Buffer pinned(1 << 20, Device::CPU, HostMemory::Pinned);
    cudaPointerAttributes a{};
    VIT_CUDA_CHECK(cudaPointerGetAttributes(&a, dev.data()));
    device_of_buffer = a.device;
    cudaPointerAttributes b{};
    VIT_CUDA_CHECK(cudaPointerGetAttributes(&b, pinned.data()));
    device_of_pinned = b.device;
    VIT_CUDA_CHECK(cudaGetDevice(&thread_current));
  });
  worker.join();
  BOOST_TEST(device_of_buffer == chosen);
  BOOST_TEST(thread_current == chosen);
  std::printf("GPU %d chosen: a new thread's device buffer is on GPU %d, its pinned buffer registered with GPU %d\n",
              chosen, device_of_buffer, device_of_pinned);
}

#else
// Never runs: VitRequireGpu ends a CPU build's run with "Skipped" first
// (Boost.Test refuses a module without test cases before it gets there).
BOOST_AUTO_TEST_CASE(needs_cuda) {}
#endif  // VIT_WITH_CUDA
