// Scratch experiment (eighteenth session): the short attention backward with Hopper wgmma, two warpgroups,
// 64 x 64 tiles, K and V of a warpgroup's keys held in registers (A operands), Q and dO read from shared memory
// once per 64 queries. Against the product's mma.sync kernel (attention_short.cu, called through the product's
// library) and an fp32 reference on the GPU. Not product code.
//
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -I<repo>/src attn_bwd_wgmma.cu \
//        <build>/libvit_kernels.a <build>/libvit_core.a -lcublasLt -lcublas -lcudnn -lgomp -o attn_bwd_wgmma
//
// Layout of a (b, h): rows of 64 bf16 (128 B) with the 128-byte swizzle (16-byte piece p of row r at piece
// p ^ (r % 8)); Q, K, dO: 256 rows each; dS (queries x keys) in 4 chunks of 64 keys, 256 query rows each; V
// in dS's last chunk until the warps hold their V fragments.
//
// Phase 1, warpgroup w, key tiles w, w + 2 (64 keys each), every query tile of 64:
//   S^T = K_t Q^T, dP^T = V_t dO^T (A from registers, B = Q / dO K-major),
//   P^T = exp2(S^T scale log2e - lse), dS^T = P^T (dP^T - Drow) scale (rounded to bf16),
//   dV += P^T dO, dK += dS^T Q (A from registers, B = dO / Q MN-major), dS^T stored transposed (stmatrix.trans).
// Phase 2, warpgroup w, query tiles w, w + 2: dQ = dS K (A = dS K-major, B = K MN-major).
#include <cuda_bf16.h>
#include <cuda.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>

#include "kernels/attention_short.h"
#include "kernels/gpu_context.h"

#define CK(x)                                                                                        \
  do {                                                                                               \
    cudaError_t e_ = (x);                                                                            \
    if (e_ != cudaSuccess) {                                                                         \
      std::printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e_));                     \
      std::exit(1);                                                                                  \
    }                                                                                                \
  } while (0)

using bf16 = __nv_bfloat16;
#include "wgmma64.h"

namespace {

constexpr int kHS = 64;
constexpr int kRows = 256;                  // rows a (b, h) is laid out for (T <= 256)
constexpr int kTile = kRows * 128;          // bytes of one 256-row x 128-byte array
// Q K dO, dS (4 chunks), lse, Drow, mbarrier: 232,464 bytes would pass the 232,448 a block may have with 1 KB
// of alignment slack, so the kernel relies on the dynamic base being 1024-aligned (it traps otherwise).
constexpr int kSmem = 3 * kTile + 4 * kTile + 2 * kRows * 4 + 16;
constexpr int kThreads = 256;

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
// Byte offset of 16-byte piece p of row r in a 128-byte swizzled array.
__device__ __forceinline__ uint32_t swz(int r, int p) { return r * 128 + ((p ^ (r & 7)) << 4); }

__device__ __forceinline__ uint64_t desc(uint32_t saddr) {  // 128-byte swizzle, 8-row groups 1024 B apart
  uint64_t d = 0;
  d |= static_cast<uint64_t>((saddr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>(1) << 16;
  d |= static_cast<uint64_t>(1024 >> 4) << 32;
  d |= static_cast<uint64_t>(1) << 62;
  return d;
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void stsm_x4_t(uint32_t addr, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(a), "r"(b),
               "r"(c), "r"(d)
               : "memory");
}
__device__ __forceinline__ void cp_async16(uint32_t saddr, const void* g) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(saddr), "l"(g));
}
__device__ __forceinline__ void mbar_init(uint64_t* b, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(b)), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* b, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* b, uint32_t parity) {
  const uint32_t a = smem_u32(b);
  uint32_t ok = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(ok)
        : "r"(a), "r"(parity)
        : "memory");
  } while (!ok);
}
// A 64 x 64 box (128-byte swizzle) of a (cols, T, B) tensor; rows past T arrive as zeros.
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, int c0, int c1, int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(
          smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar))
      : "memory");
}
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// A warpgroup's m64n64 fp32 accumulator as bf16 rows r0 + 16 wi + g (+8), rows at or past T skipped.
__device__ __forceinline__ void store_acc(bf16* dst, int64_t ld, int r0, int T, const float* acc, int wi, int lane) {
  const int g = lane >> 2, c = 2 * (lane & 3);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = r0 + 16 * wi + g + 8 * half;
    if (r >= T) continue;
    bf16* row = dst + static_cast<int64_t>(r) * ld;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      *reinterpret_cast<uint32_t*>(row + 8 * j + c) = pack2(acc[4 * j + 2 * half], acc[4 * j + 2 * half + 1]);
  }
}

__global__ void __launch_bounds__(kThreads, 1)
    attn_bwd_wgmma(bf16* dqkv, const bf16* qkv, const bf16* __restrict__ out, const bf16* __restrict__ dout,
                   const float* __restrict__ stats, int T, int NH, float scale, long long* marks,
                   const __grid_constant__ CUtensorMap tm_qkv, const __grid_constant__ CUtensorMap tm_o,
                   const __grid_constant__ CUtensorMap tm_do) {
  long long t_mark[5];
  t_mark[0] = clock64();
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  if (smem_u32(smem_raw) & 1023) __trap();
  unsigned char* smem = smem_raw;
  unsigned char* sQ = smem;
  unsigned char* sK = sQ + kTile;
  unsigned char* sO = sK + kTile;    // dO
  unsigned char* sD = sO + kTile;    // dS, 4 chunks of kTile
  unsigned char* sV = sD + 3 * kTile;  // V in dS's last chunk, until phase 1's second round has its fragments
  float* s_lse = reinterpret_cast<float*>(sD + 4 * kTile);
  float* s_drow = s_lse + kRows;
  uint64_t* s_bar = reinterpret_cast<uint64_t*>(s_drow + kRows);

  const int bh = blockIdx.x, b = bh / NH, h = bh % NH;
  const int C = NH * kHS;
  const int64_t ld_qkv = 3 * static_cast<int64_t>(C), ld_o = C;
  const bf16* gq = qkv + static_cast<int64_t>(b) * T * ld_qkv + h * kHS;
  const bf16* go = out + static_cast<int64_t>(b) * T * ld_o + h * kHS;
  const bf16* gdo = dout + static_cast<int64_t>(b) * T * ld_o + h * kHS;
  bf16* gdq = dqkv + static_cast<int64_t>(b) * T * ld_qkv + h * kHS;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2, wi = warp & 3;
  const int nt = (T + 63) / 64;  // tiles of 64 rows

#if defined(TMA)
  // Every 64-row tile of Q, K, V, dO and O by the tensor copy engine (one thread, one mbarrier); rows past T
  // arrive as zeros. O lands in dS's first chunk (free until phase 1 writes it) for Drow.
  const float log2e = 1.4426950408889634f;
  unsigned char* sOut = sD;
  if (tid == 0) {
    mbar_init(s_bar, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  if (tid == 0) {
    mbar_expect_tx(s_bar, nt * 5 * 8192);
    for (int t = 0; t < nt; ++t) {
      tma_load_3d(sK + t * 8192, &tm_qkv, C + h * kHS, t * 64, b, s_bar);
      tma_load_3d(sV + t * 8192, &tm_qkv, 2 * C + h * kHS, t * 64, b, s_bar);
      tma_load_3d(sQ + t * 8192, &tm_qkv, h * kHS, t * 64, b, s_bar);
      tma_load_3d(sO + t * 8192, &tm_do, h * kHS, t * 64, b, s_bar);
      tma_load_3d(sOut + t * 8192, &tm_o, h * kHS, t * 64, b, s_bar);
    }
  }
  const float* st = stats + static_cast<int64_t>(bh) * T;
  for (int r = tid; r < nt * 64; r += kThreads) s_lse[r] = r < T ? st[r] * log2e : INFINITY;
  mbar_wait(s_bar, 0);
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int i = tid + k * kThreads, r = i >> 3, p = i & 7;
    float d = 0.0f;
    if (r < T) {
      const uint4 o4 = *reinterpret_cast<const uint4*>(sOut + swz(r, p));
      const uint4 g4 = *reinterpret_cast<const uint4*>(sO + swz(r, p));
      const uint32_t* o = reinterpret_cast<const uint32_t*>(&o4);
      const uint32_t* gg = reinterpret_cast<const uint32_t*>(&g4);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&o[j]));
        const float2 c = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&gg[j]));
        d = fmaf(a.x, c.x, d);
        d = fmaf(a.y, c.y, d);
      }
    }
    d += __shfl_xor_sync(0xffffffffu, d, 1);
    d += __shfl_xor_sync(0xffffffffu, d, 2);
    d += __shfl_xor_sync(0xffffffffu, d, 4);
    if (r < nt * 64 && p == 0) s_drow[r] = r < T ? d : 0.0f;
  }
#elif defined(STAGED)
  // O and dO rows into registers first (Drow; dO then goes to shared memory from there), then K, V and Q's
  // first tile by cp.async (group 0) and Q's other tiles (groups 1 .. 3); rows T .. 64 nt - 1 zero.
  const float log2e = 1.4426950408889634f;
  uint4 o_raw[8], g_raw[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int i = tid + k * kThreads, r = i >> 3;
    if (r < T) {
      o_raw[k] = *reinterpret_cast<const uint4*>(go + r * ld_o + (i & 7) * 8);
      g_raw[k] = *reinterpret_cast<const uint4*>(gdo + r * ld_o + (i & 7) * 8);
    }
  }
  for (int i = tid; i < nt * 64 * 8; i += kThreads) {
    const int r = i >> 3, p = i & 7;
    const uint32_t off = swz(r, p);
    if (r < T) {
      cp_async16(smem_u32(sK + off), gq + r * ld_qkv + C + p * 8);
      cp_async16(smem_u32(sV + off), gq + r * ld_qkv + 2 * C + p * 8);
    } else {
      const uint4 z = make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4*>(sQ + off) = z;
      *reinterpret_cast<uint4*>(sK + off) = z;
      *reinterpret_cast<uint4*>(sV + off) = z;
      *reinterpret_cast<uint4*>(sO + off) = z;
    }
  }
  for (int qt = 0; qt < 4; ++qt) {
    for (int i = qt * 512 + tid; i < min((qt + 1) * 64, T) * 8; i += kThreads)
      cp_async16(smem_u32(sQ + swz(i >> 3, i & 7)), gq + (i >> 3) * ld_qkv + (i & 7) * 8);
    asm volatile("cp.async.commit_group;\n" ::);
  }
  const float* st = stats + static_cast<int64_t>(bh) * T;
  for (int r = tid; r < nt * 64; r += kThreads) s_lse[r] = r < T ? st[r] * log2e : INFINITY;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int i = tid + k * kThreads, r = i >> 3, p = i & 7;
    float d = 0.0f;
    if (r < T) {
      const uint32_t* o = reinterpret_cast<const uint32_t*>(&o_raw[k]);
      const uint32_t* gg = reinterpret_cast<const uint32_t*>(&g_raw[k]);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&o[j]));
        const float2 c = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&gg[j]));
        d = fmaf(a.x, c.x, d);
        d = fmaf(a.y, c.y, d);
      }
      *reinterpret_cast<uint4*>(sO + swz(r, p)) = g_raw[k];
    }
    d += __shfl_xor_sync(0xffffffffu, d, 1);
    d += __shfl_xor_sync(0xffffffffu, d, 2);
    d += __shfl_xor_sync(0xffffffffu, d, 4);
    if (r < nt * 64 && p == 0) s_drow[r] = r < T ? d : 0.0f;
  }
  asm volatile("cp.async.wait_group 3;\n" ::: "memory");  // K, V, Q's first tile
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
#else
  // Loads: Q, K, V, dO by cp.async into their swizzled rows; rows T .. 64 nt - 1 zero.
  for (int i = tid; i < nt * 64 * 8; i += kThreads) {
    const int r = i >> 3, p = i & 7;
    const uint32_t off = swz(r, p);
    if (r < T) {
      cp_async16(smem_u32(sQ + off), gq + r * ld_qkv + p * 8);
      cp_async16(smem_u32(sK + off), gq + r * ld_qkv + C + p * 8);
      cp_async16(smem_u32(sV + off), gq + r * ld_qkv + 2 * C + p * 8);
      cp_async16(smem_u32(sO + off), gdo + r * ld_o + p * 8);
    } else {
      const uint4 z = make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4*>(sQ + off) = z;
      *reinterpret_cast<uint4*>(sK + off) = z;
      *reinterpret_cast<uint4*>(sV + off) = z;
      *reinterpret_cast<uint4*>(sO + off) = z;
    }
  }
  asm volatile("cp.async.commit_group;\n" ::);
  const float log2e = 1.4426950408889634f;
  const float* st = stats + static_cast<int64_t>(bh) * T;
  for (int r = tid; r < nt * 64; r += kThreads) s_lse[r] = r < T ? st[r] * log2e : INFINITY;
  // Drow = rowsum(dO * O): 8 threads a row, O from memory, dO from shared memory once it has landed.
  uint4 o_raw[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int i = tid + k * kThreads, r = i >> 3;
    if (r < T) o_raw[k] = *reinterpret_cast<const uint4*>(go + r * ld_o + (i & 7) * 8);
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
  __syncthreads();
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int i = tid + k * kThreads, r = i >> 3, p = i & 7;
    float d = 0.0f;
    if (r < T) {
      const uint4 g4 = *reinterpret_cast<const uint4*>(sO + swz(r, p));
      const uint32_t* o = reinterpret_cast<const uint32_t*>(&o_raw[k]);
      const uint32_t* gg = reinterpret_cast<const uint32_t*>(&g4);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&o[j]));
        const float2 c = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&gg[j]));
        d = fmaf(a.x, c.x, d);
        d = fmaf(a.y, c.y, d);
      }
    }
    d += __shfl_xor_sync(0xffffffffu, d, 1);
    d += __shfl_xor_sync(0xffffffffu, d, 2);
    d += __shfl_xor_sync(0xffffffffu, d, 4);
    if (r < nt * 64 && p == 0) s_drow[r] = r < T ? d : 0.0f;
  }
#endif
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // Q, K, dO (cp.async, zero rows) read by wgmma

  const int g = lane >> 2, c2 = 2 * (lane & 3);
  const float sl2 = scale * log2e;
  const uint32_t q_base = smem_u32(sQ), o_base = smem_u32(sO), k_base = smem_u32(sK), d_base = smem_u32(sD);
#pragma unroll 1
  for (int u = 0; u < 2; ++u) {
    const int kt = wg + 2 * u;
    const bool active = kt < nt;
    // K and V fragments of this key tile (A operands, the mma.sync m16k16 layout in each warp), then a barrier:
    // V lies in dS's last chunk, which the second round writes.
    uint32_t kf[4][4], vf[4][4];
    if (active) {
      const int row = kt * 64 + 16 * wi + (lane & 15);
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const int piece = 2 * s + (lane >> 4);
        ldsm_x4(kf[s], smem_u32(sK + swz(row, piece)));
        ldsm_x4(vf[s], smem_u32(sV + swz(row, piece)));
      }
    }
    __syncthreads();
    if (u == 0) t_mark[1] = clock64();
    if (!active) { t_mark[2 + u] = clock64(); continue; }
    float dk[32], dv[32];
#pragma unroll
    for (int i = 0; i < 32; ++i) dk[i] = dv[i] = 0.0f;
    const int key_lo = kt * 64 + 16 * wi + g;
    const bool ok_lo = key_lo < T, ok_hi = key_lo + 8 < T;
    float sT[32], dpT[32];
    auto issue_sdp = [&](int qt) {
      wgmma_fence();
#pragma unroll
      for (int s = 0; s < 4; ++s) wgmma_rs_m64n64k16<0>(sT, kf[s], desc(q_base + qt * 8192 + 32 * s), s > 0);
#pragma unroll
      for (int s = 0; s < 4; ++s) wgmma_rs_m64n64k16<0>(dpT, vf[s], desc(o_base + qt * 8192 + 32 * s), s > 0);
      wgmma_commit();
    };
    auto math = [&](int qt, uint32_t (&pa)[4][4], uint32_t (&da)[4][4]) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int q = qt * 64 + 8 * j + c2;
        const float2 lse = *reinterpret_cast<const float2*>(s_lse + q);
        const float2 dr = *reinterpret_cast<const float2*>(s_drow + q);
        float p[4], ds[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const bool ok = r < 2 ? ok_lo : ok_hi;
          const float l = (r & 1) ? lse.y : lse.x, dd = (r & 1) ? dr.y : dr.x;
#ifdef NOEXP
          p[r] = ok ? fmaf(sT[4 * j + r], sl2, -l) : 0.0f;
#else
          p[r] = ok ? fast_exp2(fmaf(sT[4 * j + r], sl2, -l)) : 0.0f;
#endif
          ds[r] = p[r] * (dpT[4 * j + r] - dd) * scale;
        }
        const int s = j >> 1, hi = j & 1;
        pa[s][2 * hi] = pack2(p[0], p[1]);
        pa[s][2 * hi + 1] = pack2(p[2], p[3]);
        da[s][2 * hi] = pack2(ds[0], ds[1]);
        da[s][2 * hi + 1] = pack2(ds[2], ds[3]);
      }
      // dS^T stored as dS (query rows, key columns) in chunk kt: matrices (8 keys x 8 queries) transposed.
      const int mi = lane >> 3, r = lane & 7;
#pragma unroll
      for (int jj = 0; jj < 8; jj += 2) {
        // matrix mi: j = jj + (mi >> 1), key half mi & 1
        const int q = qt * 64 + 8 * (jj + (mi >> 1)) + r;
        const int piece = 2 * wi + (mi & 1);
        const int s = jj >> 1;
        stsm_x4_t(d_base + kt * kTile + swz(q, piece), da[s][0], da[s][1], da[s][2], da[s][3]);
      }
    };
    auto issue_dvdk = [&](int qt, uint32_t (&pa)[4][4], uint32_t (&da)[4][4]) {
      wgmma_fence();
#pragma unroll
      for (int s = 0; s < 4; ++s) wgmma_rs_m64n64k16<1>(dv, pa[s], desc(o_base + qt * 8192 + 2048 * s), 1);
#pragma unroll
      for (int s = 0; s < 4; ++s) wgmma_rs_m64n64k16<1>(dk, da[s], desc(q_base + qt * 8192 + 2048 * s), 1);
      wgmma_commit();
    };
#ifdef STAGED
    auto q_tile_ready = [&](int qt) {  // round 0: Q's rows of tile qt landed (every thread's copies), barrier
      if (u != 0) return;
      if (qt == 1) asm volatile("cp.async.wait_group 2;\n" ::: "memory");
      if (qt == 2) asm volatile("cp.async.wait_group 1;\n" ::: "memory");
      if (qt == 3) asm volatile("cp.async.wait_group 0;\n" ::: "memory");
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      __syncthreads();
    };
#else
    auto q_tile_ready = [&](int) {};
#endif
#ifndef PIPE
#pragma unroll 1
    for (int qt = 0; qt < nt; ++qt) {
      if (qt > 0) q_tile_ready(qt);
      uint32_t pa[4][4], da[4][4];
      issue_sdp(qt);
      wgmma_wait<0>();
      math(qt, pa, da);
      issue_dvdk(qt, pa, da);
      wgmma_wait<0>();
    }
#else
    uint32_t pa0[4][4], da0[4][4], pa1[4][4], da1[4][4];
    issue_sdp(0);
    wgmma_wait<0>();
#pragma unroll
    for (int qt = 0; qt < 4; ++qt) {
      if (qt & 1) math(qt, pa1, da1); else math(qt, pa0, da0);
      if (qt + 1 < 4) {
        q_tile_ready(qt + 1);
        issue_sdp(qt + 1);
      }
      if (qt & 1) issue_dvdk(qt, pa1, da1); else issue_dvdk(qt, pa0, da0);
      if (qt + 1 < 4) wgmma_wait<1>();
    }
    wgmma_wait<0>();
#endif
    store_acc(gdq + C, ld_qkv, kt * 64, T, dk, wi, lane);
    store_acc(gdq + 2 * C, ld_qkv, kt * 64, T, dv, wi, lane);
    t_mark[2 + u] = clock64();
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // dS by stmatrix, read by wgmma
  __syncthreads();  // dS complete

  // Phase 2: dQ = dS K over the key steps of 16.
  const int nks = (T + 15) / 16;
#pragma unroll 1
  for (int u = 0; u < 2; ++u) {
    const int qt = wg + 2 * u;
    if (qt >= nt) break;
    float dq[32];
    wgmma_fence();
#pragma unroll 1
    for (int ks = 0; ks < nks; ++ks) {
      const uint64_t da = desc(d_base + (ks >> 2) * kTile + qt * 8192 + 32 * (ks & 3));
      const uint64_t db = desc(k_base + ks * 2048);
      wgmma_ss_m64n64k16<0, 1>(dq, da, db, ks > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    store_acc(gdq, ld_qkv, qt * 64, T, dq, wi, lane);
  }
  t_mark[4] = clock64();
  if (marks && (tid & 127) == 0)
    for (int i = 0; i < 5; ++i) marks[(static_cast<int64_t>(blockIdx.x) * 2 + wg) * 5 + i] = t_mark[i];
}

// ---- fp32 reference (one thread per (b, h, row)).
__global__ void ref_forward(const bf16* qkv, bf16* out, float* stats, int B, int T, int NH, float scale) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= B * NH * T) return;
  const int i = idx % T, bh = idx / T, b = bh / NH, h = bh % NH, C = NH * kHS;
  const int64_t ld = 3 * C;
  const bf16* base = qkv + static_cast<int64_t>(b) * T * ld + h * kHS;
  float m = -INFINITY;
  for (int j = 0; j < T; ++j) {
    float s = 0;
    for (int c = 0; c < kHS; ++c) s += __bfloat162float(base[i * ld + c]) * __bfloat162float(base[j * ld + C + c]);
    m = fmaxf(m, s * scale);
  }
  float l = 0, o[kHS] = {};
  for (int j = 0; j < T; ++j) {
    float s = 0;
    for (int c = 0; c < kHS; ++c) s += __bfloat162float(base[i * ld + c]) * __bfloat162float(base[j * ld + C + c]);
    const float p = expf(s * scale - m);
    l += p;
    for (int c = 0; c < kHS; ++c) o[c] += p * __bfloat162float(base[j * ld + 2 * C + c]);
  }
  for (int c = 0; c < kHS; ++c) out[(static_cast<int64_t>(b) * T + i) * C + h * kHS + c] = __float2bfloat16(o[c] / l);
  stats[static_cast<int64_t>(bh) * T + i] = m + logf(l);
}
// dQ row i (queries) or dK / dV row j (keys), fp32.
__global__ void ref_backward(const bf16* qkv, const bf16* out, const bf16* dout, const float* stats, float* dref, int B,
                             int T, int NH, float scale) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= B * NH * T) return;
  const int i = idx % T, bh = idx / T, b = bh / NH, h = bh % NH, C = NH * kHS;
  const int64_t ld = 3 * C;
  const bf16* base = qkv + static_cast<int64_t>(b) * T * ld + h * kHS;
  const bf16* ob = out + static_cast<int64_t>(b) * T * C + h * kHS;
  const bf16* gb = dout + static_cast<int64_t>(b) * T * C + h * kHS;
  const float* lse = stats + static_cast<int64_t>(bh) * T;
  auto Q = [&](int r, int c) { return __bfloat162float(base[r * ld + c]); };
  auto K = [&](int r, int c) { return __bfloat162float(base[r * ld + C + c]); };
  auto V = [&](int r, int c) { return __bfloat162float(base[r * ld + 2 * C + c]); };
  auto dO = [&](int r, int c) { return __bfloat162float(gb[r * C + c]); };
  auto D = [&](int r) {
    float d = 0;
    for (int c = 0; c < kHS; ++c) d += dO(r, c) * __bfloat162float(ob[r * C + c]);
    return d;
  };
  auto P = [&](int q, int k) {
    float s = 0;
    for (int c = 0; c < kHS; ++c) s += Q(q, c) * K(k, c);
    return expf(s * scale - lse[q]);
  };
  auto dP = [&](int q, int k) {
    float s = 0;
    for (int c = 0; c < kHS; ++c) s += dO(q, c) * V(k, c);
    return s;
  };
  float* dst = dref + (static_cast<int64_t>(b) * T) * ld + h * kHS;
  float acc[kHS] = {};
  // dQ_i = scale sum_k dS[i][k] K[k]
  const float Di = D(i);
  for (int k = 0; k < T; ++k) {
    const float ds = P(i, k) * (dP(i, k) - Di) * scale;
    for (int c = 0; c < kHS; ++c) acc[c] += ds * K(k, c);
  }
  for (int c = 0; c < kHS; ++c) dst[i * ld + c] = acc[c];
  // dK_i = scale sum_q dS[q][i] Q[q], dV_i = sum_q P[q][i] dO[q]
  float av[kHS] = {};
  for (int c = 0; c < kHS; ++c) acc[c] = 0;
  for (int q = 0; q < T; ++q) {
    const float p = P(q, i), ds = p * (dP(q, i) - D(q)) * scale;
    for (int c = 0; c < kHS; ++c) {
      acc[c] += ds * Q(q, c);
      av[c] += p * dO(q, c);
    }
  }
  for (int c = 0; c < kHS; ++c) {
    dst[i * ld + C + c] = acc[c];
    dst[i * ld + 2 * C + c] = av[c];
  }
}

uint32_t rng_state = 12345u;
float frand() {
  rng_state = rng_state * 1664525u + 1013904223u;
  return ((rng_state >> 8) * (1.0f / 16777216.0f)) * 2.0f - 1.0f;
}

typedef CUresult (*EncodeFn)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                             const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                             CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
// (cols, T, B) bf16, 64 x 64 boxes, 128-byte swizzle, zeros past the bounds.
CUtensorMap make_map3(EncodeFn enc, const void* ptr, uint64_t cols, uint64_t T, uint64_t B) {
  CUtensorMap m;
  const cuuint64_t dims[3] = {cols, T, B};
  const cuuint64_t strides[2] = {cols * 2, T * cols * 2};
  const cuuint32_t box[3] = {64, 64, 1};
  const cuuint32_t es[3] = {1, 1, 1};
  CUresult r = enc(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<void*>(ptr), dims, strides, box, es,
                   CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                   CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    std::printf("cuTensorMapEncodeTiled failed: %d\n", (int)r);
    std::exit(1);
  }
  return m;
}

struct Err {
  double max_abs = 0, num = 0, den = 0, ref_max = 0;
};
Err compare(const std::vector<bf16>& got, const std::vector<float>& ref) {
  Err e;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(__bfloat162float(got[i])) - ref[i];
    e.max_abs = std::max(e.max_abs, std::fabs(d));
    e.ref_max = std::max(e.ref_max, std::fabs(static_cast<double>(ref[i])));
    e.num += d * d;
    e.den += static_cast<double>(ref[i]) * ref[i];
  }
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  const int B = argc > 1 ? std::atoi(argv[1]) : 32;
  const int T = argc > 2 ? std::atoi(argv[2]) : 197;
  const int NH = 12, C = NH * kHS;
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHS));
  const size_t nqkv = static_cast<size_t>(B) * T * 3 * C, no = static_cast<size_t>(B) * T * C;
  std::vector<bf16> h_qkv(nqkv), h_do(no);
  for (auto& v : h_qkv) v = __float2bfloat16(2.0f * frand());
  for (auto& v : h_do) v = __float2bfloat16(frand());
  bf16 *qkv, *out, *dout, *dq_new, *dq_old;
  float *stats, *dref;
  CK(cudaMalloc(&qkv, nqkv * 2));
  CK(cudaMalloc(&out, no * 2));
  CK(cudaMalloc(&dout, no * 2));
  CK(cudaMalloc(&dq_new, nqkv * 2));
  CK(cudaMalloc(&dq_old, nqkv * 2));
  CK(cudaMalloc(&stats, static_cast<size_t>(B) * NH * T * 4));
  CK(cudaMalloc(&dref, nqkv * 4));
  CK(cudaMemcpy(qkv, h_qkv.data(), nqkv * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dout, h_do.data(), no * 2, cudaMemcpyHostToDevice));
  const int rows = B * NH * T;
  ref_forward<<<(rows + 127) / 128, 128>>>(qkv, out, stats, B, T, NH, scale);
  CK(cudaGetLastError());
  ref_backward<<<(rows + 127) / 128, 128>>>(qkv, out, dout, stats, dref, B, T, NH, scale);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());

  void* fn = nullptr;
  cudaDriverEntryPointQueryResult qres;
  CK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &qres));
  if (!fn) {
    std::printf("no cuTensorMapEncodeTiled\n");
    return 1;
  }
  EncodeFn enc = reinterpret_cast<EncodeFn>(fn);
  const CUtensorMap tm_qkv = make_map3(enc, qkv, 3 * C, T, B), tm_o = make_map3(enc, out, C, T, B),
                    tm_do = make_map3(enc, dout, C, T, B);
  CK(cudaFuncSetAttribute(attn_bwd_wgmma, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  vit::GpuRuntime rt(0);
  vit::GpuHandles& gh = *rt.handles();
  cudaStream_t stream = gh.stream;
  auto run_new = [&] {
    attn_bwd_wgmma<<<B * NH, kThreads, kSmem, stream>>>(dq_new, qkv, out, dout, stats, T, NH, scale, nullptr, tm_qkv, tm_o, tm_do);
  };
  auto run_old = [&] {
    vit::kernels::short_attention_backward(gh, vit::DType::BF16, B, T, NH, kHS, dq_old, qkv, out, dout, stats, scale);
  };
  CK(cudaMemset(dq_new, 0xff, nqkv * 2));
  run_new();
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  run_old();
  CK(cudaStreamSynchronize(stream));
  std::vector<float> h_ref(nqkv);
  std::vector<bf16> h_new(nqkv), h_old(nqkv);
  CK(cudaMemcpy(h_ref.data(), dref, nqkv * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(h_new.data(), dq_new, nqkv * 2, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(h_old.data(), dq_old, nqkv * 2, cudaMemcpyDeviceToHost));
  const char* names[3] = {"dQ", "dK", "dV"};
  for (int part = 0; part < 3; ++part) {
    std::vector<float> r;
    std::vector<bf16> a, o;
    for (size_t row = 0; row < static_cast<size_t>(B) * T; ++row)
      for (int c = 0; c < C; ++c) {
        const size_t k = row * 3 * C + part * C + c;
        r.push_back(h_ref[k]);
        a.push_back(h_new[k]);
        o.push_back(h_old[k]);
      }
    const Err en = compare(a, r), eo = compare(o, r);
    std::printf("%s: wgmma max_abs %.3e rel %.3e | mma.sync max_abs %.3e rel %.3e | ref max %.3e\n", names[part],
                en.max_abs, std::sqrt(en.num / en.den), eo.max_abs, std::sqrt(eo.num / eo.den), en.ref_max);
  }
  {
    size_t same = 0;
    for (size_t i = 0; i < nqkv; ++i)
      same += *reinterpret_cast<const uint16_t*>(&h_new[i]) == *reinterpret_cast<const uint16_t*>(&h_old[i]);
    std::printf("wgmma and mma.sync outputs bit-equal: %.2f%%\n", 100.0 * same / nqkv);
    long long* marks;
    const int nm = B * NH * 2 * 5;
    CK(cudaMalloc(&marks, nm * 8));
    attn_bwd_wgmma<<<B * NH, kThreads, kSmem, stream>>>(dq_new, qkv, out, dout, stats, T, NH, scale, marks, tm_qkv, tm_o, tm_do);
    CK(cudaStreamSynchronize(stream));
    std::vector<long long> hm(nm);
    CK(cudaMemcpy(hm.data(), marks, nm * 8, cudaMemcpyDeviceToHost));
    double acc[4] = {0, 0, 0, 0};
    for (int blk = 0; blk < B * NH; ++blk)
      for (int w = 0; w < 2; ++w)
        for (int i = 0; i < 4; ++i) acc[i] += hm[(blk * 2 + w) * 5 + i + 1] - hm[(blk * 2 + w) * 5 + i];
    std::printf("clocks a warpgroup (mean): loads+Drow %.0f, round 0 %.0f, round 1 %.0f, phase 2 %.0f\n",
                acc[0] / (2 * B * NH), acc[1] / (2 * B * NH), acc[2] / (2 * B * NH), acc[3] / (2 * B * NH));
    CK(cudaFree(marks));
  }
  // Timing: median of 7 trials of 20 calls each, the two kernels alternating.
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  auto time = [&](auto&& f, cudaStream_t s) {
    std::vector<float> t;
    for (int trial = 0; trial < 7; ++trial) {
      CK(cudaEventRecord(e0, s));
      for (int i = 0; i < 20; ++i) f();
      CK(cudaEventRecord(e1, s));
      CK(cudaEventSynchronize(e1));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      t.push_back(ms / 20);
    }
    std::sort(t.begin(), t.end());
    return t[3];
  };
  float tn = 0, to = 0;
  for (int rep = 0; rep < 3; ++rep) {
    tn = time(run_new, stream);
    to = time(run_old, stream);
  }
  CK(cudaGetLastError());
  const double fl = 4.0 * 2.0 * B * NH * static_cast<double>(T) * T * kHS;  // nominal: 2.5x the forward's 2 GEMMs
  std::printf("B %d T %d: wgmma %.4f ms (%.1f TFLOP/s nominal), mma.sync (product, no bias sums) %.4f ms (%.1f)\n", B,
              T, tn, fl / tn / 1e9, to, fl / to / 1e9);
  return 0;
}
