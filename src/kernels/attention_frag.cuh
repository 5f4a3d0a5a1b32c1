// Register-fragment helpers shared by the short attention backward's two
// forms (attention_short.cu: mma.sync; attention_sm90a.cu: wgmma): ldmatrix
// loads, the SFU's exp2, pairs of 16-bit values packed in 32 bits, a warp's
// 16 x 64 accumulator stored and its column sums. Both forms round P and dS
// through pack2 and sum the bias columns here, so they keep the same bits.
//
// Included by those .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda_common.cuh"

namespace vit::kernels::cuda_detail {

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Two floats as one 32-bit pair of E, the first in the low half.
template <typename E>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<bf16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<fp16>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <typename E>
__device__ __forceinline__ float2 unpack2(uint32_t v);
template <>
__device__ __forceinline__ float2 unpack2<bf16>(uint32_t v) {
  return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&v));
}
template <>
__device__ __forceinline__ float2 unpack2<fp16>(uint32_t v) {
  return __half22float2(*reinterpret_cast<__half2*>(&v));
}


// A warp's 16 x 64 fp32 accumulator (8 tiles of 16 x 8, the mma m16n8
// layout: acc[4 nt + r]) written as E to rows r0 + g and r0 + g + 8 (row
// stride ld elements), rows at or past T skipped.
template <typename E>
__device__ __forceinline__ void store_rows(E* dst, int64_t ld, int r0, int T, const float* acc, int lane) {
  const int g = lane >> 2, c = 2 * (lane & 3);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = r0 + g + 8 * half;
    if (r >= T) continue;
    E* row = dst + static_cast<int64_t>(r) * ld;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      *reinterpret_cast<uint32_t*>(row + 8 * nt + c) = pack2<E>(acc[4 * nt + 2 * half], acc[4 * nt + 2 * half + 1]);
    }
  }
}

// The sums over a warp's 16 rows of one accumulator tile's column pair (the
// lane's four values acc4, rows g (lo: below T) and g + 8 (hi)), as stored
// (rounded to E): over the lane's two rows, then over the 8 row groups by a
// butterfly; every lane of a column pair ends with the same sums.
template <typename E>
__device__ __forceinline__ float2 column_pair_sums(const float* acc4, bool lo, bool hi) {
  float s0 = 0.0f, s1 = 0.0f;
  if (lo) {
    const float2 v = unpack2<E>(pack2<E>(acc4[0], acc4[1]));
    s0 += v.x;
    s1 += v.y;
  }
  if (hi) {
    const float2 v = unpack2<E>(pack2<E>(acc4[2], acc4[3]));
    s0 += v.x;
    s1 += v.y;
  }
#pragma unroll
  for (int o = 4; o < 32; o <<= 1) {
    s0 += __shfl_xor_sync(0xffffffffu, s0, o);
    s1 += __shfl_xor_sync(0xffffffffu, s1, o);
  }
  return make_float2(s0, s1);
}

}  // namespace vit::kernels::cuda_detail
