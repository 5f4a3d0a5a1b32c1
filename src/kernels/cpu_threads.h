// Threads for the CPU kernels (OpenMP loops and OpenBLAS).
#pragma once

namespace vit::kernels {

// n <= 0: every hardware thread (the caller divides among ranks of a node).
void set_cpu_threads(int n);
int cpu_threads();

}  // namespace vit::kernels
