// Tolerances of the CUDA-vs-CPU kernel tests, all in one place.
//
// Every check compares the GPU result with the CPU reference (fp32, run on
// fp32 copies of the very same rounded inputs the GPU got) by
//   rel = ||gpu - ref||_2 / ||ref||_2
// and fails on any NaN/inf. The values below are set from what each dtype's
// arithmetic can honestly deliver, with headroom of about 3-5x over the
// expected error, so that a real bug (a wrong index, a missed element, a
// wrong scale) fails by orders of magnitude while rounding never does:
//
//   unit roundoff u:  fp32 2^-24 = 6e-8,  tf32 2^-11 = 4.9e-4,
//                     fp16 2^-11 = 4.9e-4, bf16 2^-8 = 3.9e-3.
//   One rounding of a result to the storage type gives an rms relative error
//   of about u / sqrt(3) (uniform in [-u/2, u/2] ulps times the value's
//   spread): bf16 ~1.1e-3, fp16 ~1.4e-4.
#pragma once

#include "core/dtype.h"

namespace vit::test {

enum class OpClass {
  // One fp32 evaluation per element, one rounding to the storage type:
  // GELU, residual adds, embeddings, cross-entropy gradients, casts to
  // 16-bit. fp32: erff/expf differ from the CPU's by a few ulp -> 1e-5.
  // bf16 4e-3 (rms ~1.1e-3 expected), fp16 5e-4 (rms ~1.4e-4).
  Elementwise,
  // GEMM outputs stored in the compute dtype (linear layers, attention
  // output). fp32: K <= 3072 fp32 products summed in another order than
  // OpenBLAS, ~1e-6 -> 1e-5. bf16 6e-3 and fp16 1e-3: one rounding of the
  // output (fp32 accumulation inside the tensor cores), plus one more for the
  // bias or GELU epilogue.
  Gemm,
  // fp32 results reduced from the same (exactly representable) 16-bit inputs:
  // dweight/dbias of linear and LayerNorm, dcls/dpos, sum of squares. Only
  // the summation order differs from the CPU: 1e-5 (M <= 1576 rows; the
  // tensor cores accumulate in fp32 for bf16/fp16 inputs).
  MasterGrad,
  // LayerNorm output and input gradient: like Elementwise plus the fp32
  // statistics (exact same formula as the CPU): bf16 6e-3, fp16 1e-3, fp32 1e-5.
  LayerNorm,
  // Attention forward and backward. bf16: the probabilities are rounded to
  // bf16 before the P V product (in cuDNN's flash kernel and in the cuBLAS
  // path alike), and backward chains three rounded products (dP, dS, dQ/dK);
  // measured on an H100 (2026-11-25) up to 3.1e-3 -> 1e-2. fp16 has 8x finer
  // rounding: measured 3.6e-4 -> 1.5e-3. fp32 (cuBLAS path, fp32 scores, no
  // TF32): measured 4.6e-7 -> 5e-6.
  Attention,
  // AdamW on fp32 buffers: same formula, GPU's fused multiply-adds and
  // sqrtf against the CPU's; a few ulp of the update after several steps.
  Optimizer,
};

inline double tolerance(OpClass c, DType t, bool tf32 = false) {
  // TF32 GEMMs round both operands to 10 mantissa bits: rms ~3e-4 on the
  // products -> 3e-3 for any fp32 GEMM result with tf32 on.
  if (tf32 && t == DType::F32 && (c == OpClass::Gemm || c == OpClass::MasterGrad || c == OpClass::Attention)) {
    return 3e-3;
  }
  switch (c) {
    case OpClass::Elementwise: return t == DType::F32 ? 1e-5 : t == DType::BF16 ? 4e-3 : 5e-4;
    case OpClass::Gemm: return t == DType::F32 ? 1e-5 : t == DType::BF16 ? 6e-3 : 1e-3;
    case OpClass::MasterGrad: return 1e-5;
    case OpClass::LayerNorm: return t == DType::F32 ? 1e-5 : t == DType::BF16 ? 6e-3 : 1e-3;
    case OpClass::Attention: return t == DType::F32 ? 5e-6 : t == DType::BF16 ? 1e-2 : 1.5e-3;
    case OpClass::Optimizer: return 2e-6;
  }
  return 0.0;
}

}  // namespace vit::test
