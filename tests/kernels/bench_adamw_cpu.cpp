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
// bounded by memory bandwidth / ~30 bytes.
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
  std::vector<int> thread_counts = {1};
  if (hw > 1) thread_counts.push_back(static_cast<int>(hw));
  for (int threads : thread_counts) {
    kernels::set_cpu_threads(threads);
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
    }
  }
  return 0;
}
