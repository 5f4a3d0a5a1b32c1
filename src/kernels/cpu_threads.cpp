#include "kernels/cpu_threads.h"

#include <omp.h>

#include <algorithm>
#include <thread>

extern "C" void openblas_set_num_threads(int num_threads);

namespace vit::kernels {

namespace {
int g_threads = 1;
}

void set_cpu_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  g_threads = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int cpu_threads() { return g_threads; }

void adopt_cpu_threads() { omp_set_num_threads(g_threads); }

}  // namespace vit::kernels
