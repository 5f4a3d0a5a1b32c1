#include "kernels/blas_core.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>

extern "C" char* openblas_get_corename(void);

namespace vit::kernels {

namespace {
// Set by the re-execution: what OpenBLAS had detected before it.
constexpr const char* kDetectedVar = "VIT_OPENBLAS_DETECTED_CORE";
}  // namespace

std::string blas_core() {
  const char* name = openblas_get_corename();
  return name ? name : "";
}

std::string better_blas_core(const std::string& detected) {
  // The pre-AVX2 cores OpenBLAS falls back to when it does not recognise
  // the CPU model (its generic x86-64 target is Prescott).
  static const char* const kGeneric[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                                         "Katmai",   "Coppermine", "Northwood", "Banias", "Sandybridge"};
  bool generic = false;
  for (const char* g : kGeneric) generic = generic || detected == g;
  if (!generic) return "";
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512cd")) {
    return "SkylakeX";
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return "";
}

void reexec_with_better_blas_core(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user's choice, or done already
  const std::string detected = blas_core();
  const std::string better = better_blas_core(detected);
  if (better.empty()) return;
  if (::setenv("OPENBLAS_CORETYPE", better.c_str(), 1) != 0 || ::setenv(kDetectedVar, detected.c_str(), 1) != 0) {
    return;
  }
  // The program's own file by its real path (not /proc/self/exe, which would
  // rename the process "exe" for ps, pkill and the run-liveness checks).
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = '\0';
    ::execv(self, argv);
  }
  // Only reached when the exec failed: carry on with the detected kernels.
  ::unsetenv("OPENBLAS_CORETYPE");
  ::unsetenv(kDetectedVar);
}

std::string blas_core_note() {
  const char* detected = std::getenv(kDetectedVar);
  if (detected == nullptr || *detected == '\0') return "";
  return "CPU kernels: OpenBLAS " + blas_core() + " (it detected " + detected +
         " on this CPU; set OPENBLAS_CORETYPE to choose)";
}

}  // namespace vit::kernels
