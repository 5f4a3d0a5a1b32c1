// Test problems for the collectives, shared by the CPU and GPU suites.
//
// TransformerEngine's habit: every rank builds EVERY rank's input from one
// seed and computes the expected result locally, then checks its own part.
//
// Inputs are k/8 with integer k in [-127, 127]: exact in fp32, bf16 (8
// significant bits) and fp16, and any sum of a few thousand of them is exact
// in fp32, whatever the order. So a reduction done in fp32 (the MPI
// communicator widens bf16/fp16 to fp32) has ONE rounding, at the end, and
// its expected value is known bit for bit: the MPI tests compare exactly.
// NCCL reduces in the 16-bit type with a rounding per step, so the GPU tests
// use reduction_tolerance() below for it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "core/dtype.h"
#include "core/rng.h"

namespace vit::comm::testing {

inline const DType kAllDTypes[] = {DType::F32, DType::BF16, DType::F16};
inline const ReduceOp kAllOps[] = {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max};

// The value x becomes once stored as dtype (then read back as float).
inline float round_to(float x, DType dtype) {
  switch (dtype) {
    case DType::F32: return x;
    case DType::BF16: return bf16_to_float(float_to_bf16(x));
    case DType::F16: return f16_to_float(float_to_f16(x));
  }
  return x;
}

// Floats -> bytes of dtype, and back.
inline std::vector<unsigned char> encode(const std::vector<float>& v, DType dtype) {
  std::vector<unsigned char> out(v.size() * dtype_size(dtype));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::F32) {
      std::memcpy(&out[i * 4], &v[i], 4);
    } else {
      const uint16_t bits = dtype == DType::BF16 ? float_to_bf16(v[i]).bits : float_to_f16(v[i]).bits;
      std::memcpy(&out[i * 2], &bits, 2);
    }
  }
  return out;
}

inline std::vector<float> decode(const unsigned char* bytes, size_t count, DType dtype) {
  std::vector<float> out(count);
  for (size_t i = 0; i < count; ++i) {
    if (dtype == DType::F32) {
      std::memcpy(&out[i], bytes + i * 4, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, bytes + i * 2, 2);
      out[i] = dtype == DType::BF16 ? bf16_to_float(bf16_t{bits}) : f16_to_float(f16_t{bits});
    }
  }
  return out;
}

// Rank r's input of `count` exact values (see the top of the file).
inline std::vector<float> exact_input(uint64_t seed, int rank, size_t count) {
  Rng rng(mix_seed(seed, static_cast<uint64_t>(rank)));
  std::vector<float> v(count);
  for (float& x : v) x = static_cast<float>(static_cast<int>(rng.below(255)) - 127) / 8.0f;
  return v;
}

// The reduction of every rank's input as the MPI communicator defines it:
// exact fp32 sum (or max), Avg divided by size in fp32, one final rounding.
struct Reduction {
  std::vector<float> expected;  // rounded to the dtype
  std::vector<float> sum_abs;   // sum over ranks of |x|: scales the error bounds
};

inline Reduction reduce_reference(uint64_t seed, int size, size_t count, DType dtype, ReduceOp op) {
  Reduction r;
  std::vector<float> acc(count, op == ReduceOp::Max ? -INFINITY : 0.0f);
  r.sum_abs.assign(count, 0.0f);
  for (int rank = 0; rank < size; ++rank) {
    const std::vector<float> in = exact_input(seed, rank, count);
    for (size_t i = 0; i < count; ++i) {
      acc[i] = op == ReduceOp::Max ? std::max(acc[i], in[i]) : acc[i] + in[i];
      r.sum_abs[i] += std::fabs(in[i]);
    }
  }
  r.expected.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const float v = op == ReduceOp::Avg ? acc[i] / static_cast<float>(size) : acc[i];
    r.expected[i] = round_to(v, dtype);
  }
  return r;
}

// Error bound for a reduction done by a backend that may round in the dtype
// at every step (NCCL): each of the size-1 additions can lose half an ulp of
// the running sum, bounded by u * sum|x| (u = 2^-8 bf16, 2^-11 fp16, 2^-24
// fp32), plus the final rounding of the result and, for Avg, of the scaling
// (NCCL may multiply by 1/size). Max is exact.
inline float reduction_tolerance(DType dtype, ReduceOp op, int size, float sum_abs, float expected) {
  if (op == ReduceOp::Max) return 0.0f;
  const float u = dtype == DType::BF16 ? 0x1.0p-8f : dtype == DType::F16 ? 0x1.0p-11f : 0x1.0p-24f;
  const float scale = op == ReduceOp::Avg ? 1.0f / static_cast<float>(size) : 1.0f;
  return static_cast<float>(size - 1) * u * sum_abs * scale + 2.0f * u * std::fabs(expected);
}

// Index of the first element where |got - want| > tol(i), or -1.
template <typename Tol>
long first_mismatch(const std::vector<float>& got, const std::vector<float>& want, Tol tol) {
  if (got.size() != want.size()) return 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(got[i] - want[i]) <= tol(i))) return static_cast<long>(i);
  }
  return -1;
}

inline long first_mismatch(const std::vector<float>& got, const std::vector<float>& want) {
  return first_mismatch(got, want, [](size_t) { return 0.0f; });
}

inline std::string describe(DType dtype, ReduceOp op, size_t count) {
  return std::string(dtype_name(dtype)) + " " + reduce_op_name(op) + " count " + std::to_string(count);
}

}  // namespace vit::comm::testing
