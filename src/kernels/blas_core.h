// Which OpenBLAS kernels the CPU path runs, and a fix for a common miss.
//
// Debian's OpenBLAS is a DYNAMIC_ARCH build: when the library loads it picks
// its kernels from the CPU's identity. Virtual machines that hide the CPU
// model ("Intel(R) Xeon(R) Processor") make it fall back to the generic SSE3
// kernels ("Prescott"), 4.4x slower on the build machine's AVX-512 cores
// (sgemm 2080x384x128, one thread: 32 GFLOP/s against 143 with SkylakeX).
// OpenBLAS reads its only override, OPENBLAS_CORETYPE, at load time, so the
// program re-executes itself once with it set, before MPI starts.
#pragma once

#include <string>

namespace vit::kernels {

// The kernels OpenBLAS runs ("SkylakeX", "Haswell", "Prescott", ...).
std::string blas_core();

// The core the CPU's instruction set allows when OpenBLAS detected a generic
// one ("" when the detection is fine, or nothing better is known).
std::string better_blas_core(const std::string& detected);

// Call first thing in main(): when OpenBLAS detected a generic core and the
// CPU runs a better one, sets OPENBLAS_CORETYPE and re-executes the program
// (argv unchanged); returns otherwise (OPENBLAS_CORETYPE already set by the
// user or by the re-execution, nothing better, or the exec failed).
void reexec_with_better_blas_core(char** argv);

// One line for the run header when the core was chosen by the re-execution
// ("" otherwise).
std::string blas_core_note();

}  // namespace vit::kernels
