// Threads for the CPU kernels (OpenMP loops and OpenBLAS).
#pragma once

namespace vit::kernels {

// n <= 0: every hardware thread (the caller divides among ranks of a node).
void set_cpu_threads(int n);
int cpu_threads();
// On a thread other than the one that called set_cpu_threads: its OpenMP
// loops use cpu_threads() threads too (OpenMP's count is per thread, a new
// thread starts with the default). OpenBLAS's count is global: left alone,
// so this is safe while another thread runs a BLAS call.
void adopt_cpu_threads();

}  // namespace vit::kernels
