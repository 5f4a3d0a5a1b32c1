// Tolerances of the CUDA-vs-CPU tests, all in one place: the kernel tests
// (tests/kernels_gpu) and the whole-model tests (tests/model/test_model_gpu).
//
// Every check compares the GPU result with the CPU reference (fp32, run on
// fp32 copies of the very same rounded inputs the GPU got) by two bounds
//   rel     = ||gpu - ref||_2 / ||ref||_2
//   max_abs = max_i |gpu_i - ref_i| / max_i |ref_i|
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

struct Bound {
  double rel;      // bound on the relative L2 error
  double max_abs;  // bound on the largest element error, relative to the largest reference element
};

// The max-abs bound of the kernel tests: 10x the L2 bound. Rounding puts
// every element within about one unit roundoff of its own magnitude, so the
// largest error relative to the largest value stays below ~2x the L2 error;
// 10x leaves room for a heavy tail while a single element that is wrong by
// a typical value's size (a few percent or more of the largest) still fails.
inline double max_abs_for(double rel_tol) { return 10.0 * rel_tol; }

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

// ---------------------------------------------------------------------------
// The whole model (tests/model/test_model_gpu.cpp): one forward + backward of
// the GPU model against the CPU model (fp32) given the same weights rounded
// to the compute dtype; logits, per-sample losses, and each parameter's
// gradient compared separately.
//
// fp32 (TF32 off): every op differs from the CPU by summation order only
// (~1e-7 relative); through 12 blocks and the backward chain the errors add,
// not multiply (LayerNorm renormalises). Measured on an H200 (2026-11-30):
// at most 3.0e-6 (L2) and 2.6e-6 (largest element) on ViT-B/16 -> 3e-5.
// bf16: each op rounds its output to 8 bits (u = 3.9e-3, rms ~1.1e-3 per
// rounding), ~10 rounded results per block in forward and ~15 in backward,
// and the attention backward's own 1e-2 (Attention class above). Measured:
// logits up to 3.4e-2 / 2.9e-2 (ViT-B/16, cuDNN), gradients up to 3.1e-2 /
// 4.0e-2 (head size 5) -> 6e-2 / 6e-2 on logits and losses, 6e-2 / 8e-2 on
// gradients. A wrong scale, slice or missed op moves them by O(1).
// fp16: 8x finer rounding: measured logits 3.5e-3 / 3.3e-3, gradients
// 9.4e-3 / 8.3e-3 -> 1e-2 / 1e-2 and 2e-2 / 2e-2.
enum class ModelOutput { Logits, Losses, Grads };

inline Bound model_tolerance(ModelOutput o, DType t) {
  const bool grads = o == ModelOutput::Grads;
  switch (t) {
    case DType::F32: return Bound{3e-5, 3e-5};
    case DType::BF16: return grads ? Bound{6e-2, 8e-2} : Bound{6e-2, 6e-2};
    case DType::F16: return grads ? Bound{2e-2, 2e-2} : Bound{1e-2, 1e-2};
  }
  return Bound{0.0, 0.0};
}

}  // namespace vit::test
