// Argument checks and loop helpers shared by the CPU kernels (private to
// src/kernels/*.cpp; not part of the kernel API).
//
// The checks are the user's protection against a wrong view of a flat
// buffer: every message names the op, the argument, what it got and what was
// expected, e.g.
//   "layernorm_forward: weight has shape (7), expected (C) = (8)".
// Integer tensors (labels, predictions) and uint8 images have no DType of
// their own (core/dtype.h knows fp32/bf16/fp16 only), so for those only the
// device and the shape are checked.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/error.h"
#include "core/tensor.h"

namespace vit::kernels::cpu::detail {

// Hot loops compiled for AVX-512, AVX2+FMA and the baseline, the best one
// picked when the program loads (GCC function multi-versioning): the build
// targets plain x86-64 so that binaries run anywhere, yet the loops get the
// vector width of the machine they run on.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define VIT_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VIT_CPU_CLONES
#endif

// Below this many elements an OpenMP team costs more than it saves.
constexpr int64_t kParallelMin = 1 << 14;

inline std::string describe(const Tensor& t) {
  return str_cat(dtype_name(t.dtype), " ", t.shape_str(), " on ", device_name(t.device));
}

// Defined and in host memory.
inline void require_cpu(const char* op, const char* arg, const Tensor& t) {
  if (!t.defined()) VIT_THROW(op, ": ", arg, " is undefined (no data pointer)");
  if (t.device != Device::CPU) {
    VIT_THROW(op, ": ", arg, " is on ", device_name(t.device), ", the CPU kernel needs host memory");
  }
}

// Defined, in host memory, fp32 (the CPU kernels compute in fp32 only).
inline void require_f32(const char* op, const char* arg, const Tensor& t) {
  require_cpu(op, arg, t);
  if (t.dtype != DType::F32) {
    VIT_THROW(op, ": ", arg, " is ", dtype_name(t.dtype), ", the CPU kernel takes fp32 only");
  }
}

inline void require_shape(const char* op, const char* arg, const Tensor& t, std::initializer_list<int64_t> dims,
                          const char* names) {
  bool same = t.ndim == static_cast<int>(dims.size());
  int i = 0;
  for (int64_t d : dims) same = same && t.shape[i++] == d;
  if (!same) {
    std::string want = "(";
    i = 0;
    for (int64_t d : dims) want += (i++ ? ", " : "") + std::to_string(d);
    VIT_THROW(op, ": ", arg, " has shape ", t.shape_str(), ", expected ", names, " = ", want, ")");
  }
}

inline void require_numel(const char* op, const char* arg, const Tensor& t, int64_t n, const char* what) {
  if (t.numel() != n) {
    VIT_THROW(op, ": ", arg, " has shape ", t.shape_str(), " (", t.numel(), " elements), expected ", n, " (", what,
              ")");
  }
}

// A (..., last) tensor viewed as rows: returns the row count M, the product of
// the leading dimensions. Needs at least `min_ndim` dimensions.
inline int64_t rows_of(const char* op, const char* arg, const Tensor& t, int64_t last, const char* last_name,
                       int min_ndim = 2) {
  if (t.ndim < min_ndim) {
    VIT_THROW(op, ": ", arg, " has shape ", t.shape_str(), ", expected at least ", min_ndim, " dimensions");
  }
  if (t.dim(-1) != last) {
    VIT_THROW(op, ": ", arg, " has shape ", t.shape_str(), ", its last dimension must be ", last_name, " = ", last);
  }
  return last == 0 ? 0 : t.numel() / last;
}

// Two (..., X) tensors must agree on every leading dimension.
inline void require_same_rows(const char* op, const char* arg, const Tensor& t, const char* ref_arg,
                              const Tensor& ref) {
  bool same = t.ndim == ref.ndim;
  for (int i = 0; same && i + 1 < t.ndim; ++i) same = t.shape[i] == ref.shape[i];
  if (!same) {
    VIT_THROW(op, ": ", arg, " has shape ", t.shape_str(), " but ", ref_arg, " has ", ref.shape_str(),
              ": their leading dimensions must agree");
  }
}

// db (N) (+)= the column sums of g (M, N) (= when !accumulate): a bias
// gradient. Blocks of columns, each one thread's, walk the rows in order with
// double accumulators: the same bits whatever the thread count.
inline void add_column_sums(float* db, const float* g, int64_t M, int64_t N, bool accumulate) {
  constexpr int64_t kCols = 64;
  const int64_t blocks = (N + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (M * N > kParallelMin)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t n0 = blk * kCols;
    const int64_t w = std::min(kCols, N - n0);
    double acc[kCols] = {};
    for (int64_t r = 0; r < M; ++r) {
      const float* row = g + r * N + n0;
      for (int64_t j = 0; j < w; ++j) acc[j] += row[j];
    }
    for (int64_t j = 0; j < w; ++j) db[n0 + j] = (accumulate ? db[n0 + j] : 0.0f) + static_cast<float>(acc[j]);
  }
}

}  // namespace vit::kernels::cpu::detail
