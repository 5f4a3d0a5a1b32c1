// Speed of the CPU AdamW (kernels/adamw.cpp), the update gemini runs on the
// host for its offloaded optimizer states: elements per second for each
// compute-dtype copy it may write (none, fp32, bf16, fp16) and for 1 thread
// and every thread. Not a test (timings vary with the machine): run by hand,
//
//   build-cpu/tests/kernels/bench_adamw_cpu [elements=8388608] [repeats=7]
//
// Each case runs `repeats` times after one warm-up on buffers of `elements`
// fp32 values (param, m, v, grad: 4 x 32 MiB at the default), far larger than
// the caches, and prints the best and the median rate. An update reads 16
// bytes an element and writes 12 (plus 2 or 4 for the copy), so the rate is
// bounded by memory bandwidth / ~30 bytes. For that bound on the machine at
// hand, each thread count also times a streaming loop with the bf16 update's
// traffic (read p, m, v, g; write p, m, v and a 16-bit copy) and almost no
// arithmetic, split into the same contiguous range per thread, and prints
// the bf16 update's best rate as a share of it: near 100%, only less traffic
// can make the update faster.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "core/device.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/adamw.h"
#include "kernels/cpu_threads.h"

using namespace vit;

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : (int64_t{1} << 23);
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 7;
  Buffer p(n * 4, Device::CPU), m(n * 4, Device::CPU), v(n * 4, Device::CPU), g(n * 4, Device::CPU);
  Buffer low(n * 4, Device::CPU);
  Rng rng(7);
  for (int64_t i = 0; i < n; ++i) {
    p.as<float>()[i] = static_cast<float>(rng.normal()) * 0.02f;
    g.as<float>()[i] = static_cast<float>(rng.normal()) * 1e-3f;
  }
  m.zero();
  v.zero();
  low.zero();
  const Context ctx;
  kernels::AdamWHyper hp;
  hp.lr = 1e-3f;
  hp.weight_decay = 0.05f;
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  std::printf("CPU AdamW, %lld elements, %d repeats, %u hardware threads\n", static_cast<long long>(n), repeats, hw);
  std::printf("%-8s %-7s %14s %14s\n", "threads", "copy", "best Melem/s", "median Melem/s");
  const struct {
    const char* name;
    bool defined;
    DType dtype;
  } copies[] = {{"none", false, DType::F32}, {"fp32", true, DType::F32}, {"bf16", true, DType::BF16},
                {"fp16", true, DType::F16}};
  // The streaming loop: the bf16 update's bytes, one multiply-add an array.
  auto stream_rate = [&]() {
    float* __restrict pp = p.as<float>();
    float* __restrict mm = m.as<float>();
    float* __restrict vv = v.as<float>();
    const float* __restrict gg = g.as<float>();
    uint16_t* __restrict ll = static_cast<uint16_t*>(low.data());
    std::vector<double> rates;
    for (int r = 0; r <= repeats; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const float x = gg[i];
        pp[i] = pp[i] * 0.999f + x;
        mm[i] = mm[i] * 0.9f + x;
        vv[i] = vv[i] * 0.999f + x;
        ll[i] = static_cast<uint16_t>(x * 16.0f);
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r > 0) rates.push_back(static_cast<double>(n) / s / 1e6);
    }
    std::sort(rates.begin(), rates.end());
    return std::make_pair(rates.back(), rates[rates.size() / 2]);
  };
  std::vector<int> thread_counts = {1};
  if (hw > 1) thread_counts.push_back(static_cast<int>(hw));
  for (int threads : thread_counts) {
    kernels::set_cpu_threads(threads);
    double bf16_best = 0;
    for (const auto& c : copies) {
      Tensor lowp = c.defined ? Tensor(low.data(), c.dtype, Device::CPU, {n}) : Tensor();
      std::vector<double> rates;
      for (int r = 0; r <= repeats; ++r) {
        hp.step = r + 1;
        const auto t0 = std::chrono::steady_clock::now();
        kernels::adamw_update(ctx, tensor_of(p, DType::F32, {n}), tensor_of(m, DType::F32, {n}),
                              tensor_of(v, DType::F32, {n}), tensor_of(g, DType::F32, {n}), lowp, hp, Tensor(),
                              Tensor());
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r > 0) rates.push_back(static_cast<double>(n) / s / 1e6);  // the first run warms up
      }
      std::sort(rates.begin(), rates.end());
      std::printf("%-8d %-7s %14.1f %14.1f\n", threads, c.name, rates.back(), rates[rates.size() / 2]);
      if (c.dtype == DType::BF16 && c.defined) bf16_best = rates.back();
    }
    const auto [stream_best, stream_median] = stream_rate();
    std::printf("%-8d %-7s %14.1f %14.1f   (bf16 update: %.0f%% of it, best against best)\n", threads, "stream",
                stream_best, stream_median, 100.0 * bf16_best / stream_best);
  }
  return 0;
}
