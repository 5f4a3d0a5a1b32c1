// Attention backward for short sequences on Hopper (see attention_sm90a.h):
// the short-sequence kernel's work (attention_short.cu) with wgmma, the
// tensor copy engine and 64-row tiles. Built for sm_90a only (its own object
// in CMakeLists.txt); the dispatch in attention_short.cu calls it on
// compute capability 9.x.
//
// Persistent blocks, one an SM (its shared memory), each taking the (b, h)
// items blockIdx.x, + gridDim.x, ... in turn: two warpgroups, 64-row tiles
// (nt = ceil(T / 64), at least 2, at most 4). Shared memory, rows of 64
// elements (128 B) with the 128-byte swizzle (16-byte piece p of row r at p ^
// (r % 8)), 256 rows each: Q, K, dO, and dS (queries x keys) in 4 chunks of
// 64 keys; V lies in dS's last chunk and O (for Drow) in its first until
// phase 1 overwrites them; then lse, Drow and the loads' two mbarriers:
// 231,440 bytes, one block per SM.
//
// Loads: one thread issues every 64-row tile as tensor copies
// (cp.async.bulk.tensor, 3-D maps (columns, T, B) so that rows past T arrive
// as zeros): Q and dO on one mbarrier, K, V (from qkv) and O on the other.
// The next item's Q and dO (and its lse, by every thread) load as soon as
// phase 1 is done with this item's, under phase 2; its K, V and O as soon as
// phase 2 is done, under dQ's stores and the bias fold. Each mbarrier
// completes once an item, so item it of a block waits on parity it & 1.
// Phase 1, warpgroup w, key tiles w and w + 2 (a round each), every query
// tile qt: S^T = K_t Q_qt^T and dP^T = V_t dO_qt^T (wgmma m64n64k16, K_t and
// V_t from registers, Q and dO K-major), P^T = exp2(S^T scale log2e - lse),
// dS^T = P^T (dP^T - Drow) scale rounded to E and stored transposed into dS
// (stmatrix .trans), dV += P^T dO_qt and dK += dS^T Q_qt (P^T, dS^T from
// registers, dO and Q MN-major). The next query tile's S^T and dP^T are
// issued before this tile's dV and dK, so the exponentials of one overlap
// the other's products; P^T and dS^T alternate between two register sets.
// The last query tile's softmax gradient, dV and dK run over its first NL *
// 16 queries only (a template parameter: 197 tokens as 192 + 16, where the
// rest of that tile is padding whose P^T and dS^T are zeros).
// Phase 2, warpgroup w, query tiles w and w + 2: dQ = dS K over the keys in
// steps of 16 (dS K-major, K MN-major).
//
// The sums run in the short-sequence kernel's order (fp32, 16 keys a step
// along the keys, 16 queries a step along the queries), so dQ, dK, dV and the
// bias partials come out bit for bit equal to attention_short.cu's (the
// GPU kernel tests check it; the padded rows past its 16-row padding add
// exact zeros, which could only turn a sum of exactly -0 into +0). Bias partials: each warp sums the columns of
// its 16 rows of dK and dV as stored (kept in registers through phase 1)
// and of dQ, and writes them into dS's chunk 1 once phase 2 is done; the
// 16-row blocks are added in row order.
//
// In place (dqkv == qkv): every load of an item has landed (the mbarriers)
// before any of its stores, and an item's loads and stores touch only its
// own head's columns of its own sample's rows, which no other item reads or
// writes.
#include "kernels/attention_sm90a.h"

#include <cuda.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <mutex>
#include <type_traits>
#include <utility>

#include "kernels/attention_frag.cuh"
#include "kernels/cuda_common.cuh"

namespace vit::kernels {
namespace {

using namespace cuda_detail;

constexpr int kHS = 64;
constexpr int kRows = 256;           // rows of each array (T <= 256)
constexpr int kTile = kRows * 128;   // bytes of one array of 256 rows x 128 B
constexpr int kBox = 64 * 128;       // bytes of one 64-row tile
constexpr int kThreads = 256;        // two warpgroups
constexpr int kBiasCols = 3 * kHS;
// Q, K, dO | dS (4 chunks) | lse, Drow | two mbarriers. With 1 KB of alignment
// slack this would pass the 232,448 bytes a block may have, so the kernel
// takes the dynamic base's 1024-byte alignment as given (and traps if not).
constexpr size_t kSmem = 3 * kTile + 4 * kTile + 2 * kRows * sizeof(float) + 16;

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define VIT_SM90A_DEVICE 1
#endif

// x, as a value the compiler cannot see through (nor hoist out of a loop).
__device__ __forceinline__ int opaque(int x) {
  int y;
  asm volatile("mov.b32 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

// blockIdx.x and gridDim.x, read where they are used (not held in registers).
__device__ __forceinline__ int block_index() {
  int v;
  asm volatile("mov.u32 %0, %%ctaid.x;\n" : "=r"(v));
  return v;
}
__device__ __forceinline__ int grid_size() {
  int v;
  asm volatile("mov.u32 %0, %%nctaid.x;\n" : "=r"(v));
  return v;
}

__device__ __forceinline__ uint32_t swz(int r, int p) { return r * 128 + ((p ^ (r & 7)) << 4); }

// wgmma matrix descriptor: 128-byte swizzle, 8-row groups 1024 B apart.
__device__ __forceinline__ uint64_t desc(uint32_t saddr) {
  uint64_t d = static_cast<uint64_t>((saddr & 0x3FFFF) >> 4);
  d |= static_cast<uint64_t>(1) << 16;
  d |= static_cast<uint64_t>(1024 >> 4) << 32;
  d |= static_cast<uint64_t>(1) << 62;
  return d;
}

#ifdef VIT_SM90A_DEVICE
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// The 32 fp32 accumulators of a thread in an m64n64 wgmma, as asm operands %0 .. %31.
#define VIT_WGMMA_ACC "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define VIT_WGMMA_D "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
template <typename E>
constexpr bool is_bf16 = std::is_same_v<E, bf16>;

// d (64 x 64 fp32) (+)= a (64 x 16, registers) b (16 x 64, descriptor; TB = 1:
// MN-major); scale_d = 0 overwrites d.
template <typename E, int TB>
__device__ __forceinline__ void wgmma_rs(float* d, const uint32_t a[4], uint64_t db, int scale_d) {
#define VIT_WGMMA_RS(TY)                                                                         \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                      \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " VIT_WGMMA_ACC         \
               ", {%32,%33,%34,%35}, %36, p, 1, 1, %38;\n}\n"                                    \
               : VIT_WGMMA_D                                                                     \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d), "n"(TB))
  if constexpr (is_bf16<E>) {
    VIT_WGMMA_RS("bf16");
  } else {
    VIT_WGMMA_RS("f16");
  }
#undef VIT_WGMMA_RS
}
// d (+)= a (descriptor, K-major) b (descriptor, MN-major).
template <typename E>
__device__ __forceinline__ void wgmma_ss(float* d, uint64_t da, uint64_t db, int scale_d) {
#define VIT_WGMMA_SS(TY)                                                                         \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                      \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " " VIT_WGMMA_ACC         \
               ", %32, %33, p, 1, 1, 0, 1;\n}\n"                                                 \
               : VIT_WGMMA_D                                                                     \
               : "l"(da), "l"(db), "r"(scale_d))
  if constexpr (is_bf16<E>) {
    VIT_WGMMA_SS("bf16");
  } else {
    VIT_WGMMA_SS("f16");
  }
#undef VIT_WGMMA_SS
}
// d (64 x N fp32) (+)= a (descriptor, K-major) b (descriptor, K-major), N =
// 16, 32, 48 or 64 (d holds N / 2 values a thread): the forward's S = Q K^T.
template <typename E, int N>
__device__ __forceinline__ void wgmma_ss_kk(float* d, uint64_t da, uint64_t db, int scale_d) {
#define VIT_WGMMA_SS_KK(TY, NS, ACC, A, B, S, ...)                                                \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " S ", 0;\n"                                     \
               "wgmma.mma_async.sync.aligned.m64n" NS "k16.f32." TY "." TY " " ACC ", " A ", " B \
               ", p, 1, 1, 0, 0;\n}\n"                                                           \
               : __VA_ARGS__                                                                     \
               : "l"(da), "l"(db), "r"(scale_d))
#define VIT_KK(TY)                                                                               \
  if constexpr (N == 16) {                                                                       \
    VIT_WGMMA_SS_KK(TY, "16", "{%0,%1,%2,%3,%4,%5,%6,%7}", "%8", "%9", "%10", "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]));                                    \
  } else if constexpr (N == 32) {                                                                \
    VIT_WGMMA_SS_KK(TY, "32", "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}", "%16", "%17", "%18", "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]));                                  \
  } else if constexpr (N == 48) {                                                                \
    VIT_WGMMA_SS_KK(TY, "48", "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23}", "%24", "%25", "%26", "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]));                                  \
  } else {                                                                                       \
    static_assert(N == 64, "wgmma_ss_kk: N is 16, 32, 48 or 64");                                \
    VIT_WGMMA_SS_KK(TY, "64", VIT_WGMMA_ACC, "%32", "%33", "%34", VIT_WGMMA_D);              \
  }
  if constexpr (is_bf16<E>) {
    VIT_KK("bf16")
  } else {
    VIT_KK("f16")
  }
#undef VIT_KK
#undef VIT_WGMMA_SS_KK
}
#undef VIT_WGMMA_ACC
#undef VIT_WGMMA_D

__device__ __forceinline__ void stsm_x4_t(uint32_t addr, const uint32_t v[4]) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(v[0]),
               "r"(v[1]), "r"(v[2]), "r"(v[3])
               : "memory");
}
__device__ __forceinline__ void mbar_init(uint64_t* b, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(b)), "r"(count));
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* b, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* b, uint32_t parity) {
  const uint32_t a = smem_addr(b);
  uint32_t ok = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(ok)
        : "r"(a), "r"(parity)
        : "memory");
  } while (!ok);
}
// One 64 x 64 box of a (columns, T, B) tensor map at (c0, c1, c2).
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, int c0, int c1, int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::
          "r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
      : "memory");
}
#endif  // VIT_SM90A_DEVICE

// The column sums of this warp's 16 rows of a warpgroup's 64 x 64
// accumulator as stored (rows r0 .. r0 + 15, those at or past T left out):
// lane (g, c) returns those of columns 8 g + 2 c and the one after.
template <typename E>
__device__ __forceinline__ float2 column_sums(int r0, int T, const float* acc, int lane) {
  const int g = lane >> 2;
  const bool lo = r0 + g < T, hi = r0 + g + 8 < T;
  float2 mine = make_float2(0.0f, 0.0f);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const float2 s = column_pair_sums<E>(acc + 4 * j, lo, hi);
    if (j == g) mine = s;
  }
  return mine;
}

// KS = ceil(T / 16), the 16-row blocks (1 .. 16): NT = ceil(T / 64) tiles (at
// least 2), the last query tile's NL * 16 rows, and phase 2's steps along
// the keys, unrolled (a rolled loop of them in the item loop makes ptxas
// serialise every wgmma of the kernel, C7512).
template <typename E, int KS>
__global__ void __launch_bounds__(kThreads, 1)
    sm90a_attention_backward_kernel(E* dqkv, const float* __restrict__ stats, int T, int NH, int items, float scale,
                                    float* __restrict__ bias_partial, const __grid_constant__ CUtensorMap tm_qkv,
                                    const __grid_constant__ CUtensorMap tm_out, const __grid_constant__ CUtensorMap tm_dout) {
#ifdef VIT_SM90A_DEVICE
  constexpr int NT = KS <= 8 ? 2 : (KS + 3) / 4;
  constexpr int NL = KS > 4 * (NT - 1) ? KS - 4 * (NT - 1) : 1;  // T <= 64: a second tile of padding
  extern __shared__ __align__(1024) unsigned char smem[];
  if (smem_addr(smem) & 1023) __trap();  // the swizzled tiles need 1024-byte alignment
  unsigned char* sQ = smem;
  unsigned char* sK = sQ + kTile;
  unsigned char* sO = sK + kTile;         // dO
  unsigned char* sD = sO + kTile;         // dS: 4 chunks of 64 keys
  unsigned char* sV = sD + 3 * kTile;     // V, until the second round holds its fragments
  unsigned char* sOut = sD;               // O, until Drow is summed
  float* s_lse = reinterpret_cast<float*>(sD + 4 * kTile);  // log2-scaled, +inf past T
  float* s_drow = s_lse + kRows;
  uint64_t* s_bar = reinterpret_cast<uint64_t*>(s_drow + kRows);  // [0]: Q, dO; [1]: K, V, O
  float* s_sums = reinterpret_cast<float*>(sD + kTile);  // [16-row block][kBiasCols], over dS's chunk 1 after phase 2

  const int C = NH * kHS;
  const int64_t ld_qkv = 3 * static_cast<int64_t>(C);
  const float log2e = 1.4426950408889634f;
  constexpr int nb = KS;  // 16-row blocks

  // The tensor copies of item `item` (by one thread): Q and dO on s_bar[0],
  // K, V and O on s_bar[1].
  auto load_q_do = [&](int item) {
    const int b = item / NH, h = item % NH;
    mbar_expect_tx(s_bar, NT * 2 * kBox);
    for (int t = 0; t < NT; ++t) {
      tma_load_3d(sQ + t * kBox, &tm_qkv, h * kHS, t * 64, b, s_bar);
      tma_load_3d(sO + t * kBox, &tm_dout, h * kHS, t * 64, b, s_bar);
    }
  };
  auto load_k_v_o = [&](int item) {
    const int b = item / NH, h = item % NH;
    mbar_expect_tx(s_bar + 1, NT * 3 * kBox);
    for (int t = 0; t < NT; ++t) {
      tma_load_3d(sK + t * kBox, &tm_qkv, C + h * kHS, t * 64, b, s_bar + 1);
      tma_load_3d(sV + t * kBox, &tm_qkv, 2 * C + h * kHS, t * 64, b, s_bar + 1);
      tma_load_3d(sOut + t * kBox, &tm_out, h * kHS, t * 64, b, s_bar + 1);
    }
  };
  auto load_lse = [&](int item) {
    const float* st = stats + static_cast<int64_t>(item) * T;
    for (int r = opaque(threadIdx.x); r < NT * 64; r += kThreads) s_lse[r] = r < T ? st[r] * log2e : INFINITY;
  };

  const int first = block_index();
  if (threadIdx.x == 0) {
    mbar_init(s_bar, 1);
    mbar_init(s_bar + 1, 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    load_q_do(first);
    load_k_v_o(first);
  }
  load_lse(first);
  // This item's columns of dqkv (made again where they are stored: held
  // through phase 1, the pointer would take registers the wgmma need).
  auto item_dq = [&](int item) {
    const int i = opaque(item);
    return dqkv + static_cast<int64_t>(i / NH) * T * ld_qkv + (i % NH) * kHS;
  };
#pragma unroll 1
  for (int item = first; item < items; item += grid_size()) {
    const uint32_t parity = ((item - block_index()) / grid_size()) & 1;  // each mbarrier completes once an item
    mbar_wait(s_bar, parity);
    mbar_wait(s_bar + 1, parity);
    // The thread's indices, made again each item from an opaque thread
    // index: the index math of phase 1, hoisted out of the item loop, would
    // hold registers through phase 2, and ptxas would serialise every wgmma
    // for want of them.
    const int tid = opaque(threadIdx.x), lane = tid & 31, warp = tid >> 5, wg = warp >> 2, wi = warp & 3;
    const int g = lane >> 2, c2 = 2 * (lane & 3);
    // Drow = rowsum(dO * O), 8 threads a row.
#pragma unroll
    for (int k = 0; k < NT * 2; ++k) {
      const int i = tid + k * kThreads, r = i >> 3, p = i & 7;
      float d = 0.0f;
      if (r < T) {
        const uint4 o4 = *reinterpret_cast<const uint4*>(sOut + swz(r, p));
        const uint4 g4 = *reinterpret_cast<const uint4*>(sO + swz(r, p));
        const uint32_t* o = reinterpret_cast<const uint32_t*>(&o4);
        const uint32_t* gg = reinterpret_cast<const uint32_t*>(&g4);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 a = unpack2<E>(o[j]), c = unpack2<E>(gg[j]);
          d = fmaf(a.x, c.x, d);
          d = fmaf(a.y, c.y, d);
        }
      }
      d += __shfl_xor_sync(0xffffffffu, d, 1);
      d += __shfl_xor_sync(0xffffffffu, d, 2);
      d += __shfl_xor_sync(0xffffffffu, d, 4);
      if (p == 0) s_drow[r] = r < T ? d : 0.0f;
    }

    const float sl2 = scale * log2e;
    const uint32_t q_base = smem_addr(sQ), o_base = smem_addr(sO), k_base = smem_addr(sK), d_base = smem_addr(sD);
    float2 keep_k0 = make_float2(0.0f, 0.0f), keep_v0 = keep_k0, keep_k1 = keep_k0, keep_v1 = keep_k0;  // this lane's
    // share of the bias sums of dK and dV, per round (named, not indexed by the round: the loop stays rolled)
#pragma unroll 1
    for (int u = 0; u < 2; ++u) {
      const int kt = wg + 2 * u;
      const bool active = kt < NT;
      // K_t and V_t as A fragments (the mma m16k16 layout in each warp), then a
      // barrier: Drow is complete, and the second round may overwrite V.
      uint32_t kf[4][4], vf[4][4];
      if (active) {
        const int row = kt * 64 + 16 * wi + (lane & 15);
#pragma unroll
        for (int s = 0; s < 4; ++s) {
          const int piece = 2 * s + (lane >> 4);
          ldsm_x4(kf[s], sK + swz(row, piece));
          ldsm_x4(vf[s], sV + swz(row, piece));
        }
      }
      __syncthreads();
      if (!active) continue;
      const int key_lo = kt * 64 + 16 * wi + g;
      const bool ok_lo = key_lo < T, ok_hi = key_lo + 8 < T;
      float dk[32], dv[32], sT[32], dpT[32];
      auto issue_sdp = [&](int qt) {
        wgmma_fence();
#pragma unroll
        for (int s = 0; s < 4; ++s) wgmma_rs<E, 0>(sT, kf[s], desc(q_base + qt * kBox + 32 * s), s > 0);
#pragma unroll
        for (int s = 0; s < 4; ++s) wgmma_rs<E, 0>(dpT, vf[s], desc(o_base + qt * kBox + 32 * s), s > 0);
        wgmma_commit();
      };
      // P^T and dS^T of query tile qt's first N queries as A fragments (n:
      // std::integral_constant of N: 64, or NL * 16 for the last tile, whose
      // queries past that are padding with zero P^T and dS^T); dS^T into dS,
      // transposed (the last tile's rows past N are left as they are: phase 2's
      // dQ rows from them lie past T and are neither stored nor summed).
      auto softmax_grad = [&](int qt, auto n, uint32_t (&pa)[4][4], uint32_t (&da)[4][4]) {
        constexpr int N = decltype(n)::value;
#pragma unroll
        for (int j = 0; j < N / 8; ++j) {
          const int q = qt * 64 + 8 * j + c2;
          const float2 lse = *reinterpret_cast<const float2*>(s_lse + q);
          const float2 dr = *reinterpret_cast<const float2*>(s_drow + q);
          float p[4], ds[4];
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const bool ok = r < 2 ? ok_lo : ok_hi;
            const float l = (r & 1) ? lse.y : lse.x, dd = (r & 1) ? dr.y : dr.x;
            p[r] = ok ? fast_exp2(fmaf(sT[4 * j + r], sl2, -l)) : 0.0f;
            ds[r] = p[r] * (dpT[4 * j + r] - dd) * scale;
          }
          const int s = j >> 1, hi = j & 1;
          pa[s][2 * hi] = pack2<E>(p[0], p[1]);
          pa[s][2 * hi + 1] = pack2<E>(p[2], p[3]);
          da[s][2 * hi] = pack2<E>(ds[0], ds[1]);
          da[s][2 * hi + 1] = pack2<E>(ds[2], ds[3]);
        }
        // Matrix m of each stmatrix: 8 keys (half m & 1 of the warp's 16) x 8
        // queries (group jj + (m >> 1)), stored as 8 query rows.
        const int m = lane >> 3, r = lane & 7;
#pragma unroll
        for (int jj = 0; jj < N / 8; jj += 2)
          stsm_x4_t(d_base + kt * kTile + swz(qt * 64 + 8 * (jj + (m >> 1)) + r, 2 * wi + (m & 1)), da[jj >> 1]);
      };
      // dV and dK over query tile qt's first N queries (the rest add zeros).
      auto issue_dvdk = [&](int qt, auto n, const uint32_t (&pa)[4][4], const uint32_t (&da)[4][4]) {
        constexpr int N = decltype(n)::value;
        wgmma_fence();
#pragma unroll
        for (int s = 0; s < N / 16; ++s) wgmma_rs<E, 1>(dv, pa[s], desc(o_base + qt * kBox + 2048 * s), 1);
#pragma unroll
        for (int s = 0; s < N / 16; ++s) wgmma_rs<E, 1>(dk, da[s], desc(q_base + qt * kBox + 2048 * s), 1);
        wgmma_commit();
      };
      using Full = std::integral_constant<int, 64>;
      using Last = std::integral_constant<int, NL * 16>;
#pragma unroll
      for (int i = 0; i < 32; ++i) dk[i] = dv[i] = 0.0f;
      uint32_t pa0[4][4], da0[4][4], pa1[4][4], da1[4][4];
      issue_sdp(0);
      wgmma_wait<0>();
#pragma unroll
      for (int qt = 0; qt < NT - 1; ++qt) {
        if (qt & 1) softmax_grad(qt, Full{}, pa1, da1); else softmax_grad(qt, Full{}, pa0, da0);
        issue_sdp(qt + 1);
        if (qt & 1) issue_dvdk(qt, Full{}, pa1, da1); else issue_dvdk(qt, Full{}, pa0, da0);
        wgmma_wait<1>();  // S^T, dP^T of the next tile (this tile's dV, dK may still run)
      }
      if constexpr ((NT - 1) & 1) {
        softmax_grad(NT - 1, Last{}, pa1, da1);
        issue_dvdk(NT - 1, Last{}, pa1, da1);
      } else {
        softmax_grad(NT - 1, Last{}, pa0, da0);
        issue_dvdk(NT - 1, Last{}, pa0, da0);
      }
      wgmma_wait<0>();
      E* gdq = item_dq(item);
      store_rows<E>(gdq + C, ld_qkv, kt * 64 + 16 * wi, T, dk, lane);
      store_rows<E>(gdq + 2 * C, ld_qkv, kt * 64 + 16 * wi, T, dv, lane);
      // (Unconditional: accumulators read under a branch make ptxas serialize every wgmma of the kernel.)
      const float2 sk = column_sums<E>(kt * 64 + 16 * wi, T, dk, lane);
      const float2 sv = column_sums<E>(kt * 64 + 16 * wi, T, dv, lane);
      if (u == 0) {
        keep_k0 = sk;
        keep_v0 = sv;
      } else {
        keep_k1 = sk;
        keep_v1 = sv;
      }
    }
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");  // dS by stmatrix, read by wgmma
    __syncthreads();  // dS complete; Q, dO, lse and Drow free
    // The next item's Q and dO load under phase 2, its lse with them.
    const int next = item + grid_size();
    E* gdq = item_dq(item);
    if (next < items) {
      if (tid == 0) load_q_do(next);
      load_lse(next);
    }

    // Phase 2: dQ = dS K, keys in steps of 16. With 4 tiles each warpgroup
    // has two query tiles, whose products go out interleaved (two independent
    // accumulators keep the tensor pipe busy across each other's latency).
    // Each warp's column sums of its dQ rows stay in registers until phase 2
    // is done (computed unconditionally, as above).
    float2 keep_q0 = make_float2(0.0f, 0.0f), keep_q1 = keep_q0;
    if constexpr (NT == 4) {
      float dq0[32], dq1[32];
      const uint32_t a0 = d_base + wg * kBox, a1 = d_base + (wg + 2) * kBox;
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const uint32_t off = (ks >> 2) * kTile + 32 * (ks & 3);
        const uint64_t db = desc(k_base + ks * 2048);
        wgmma_ss<E>(dq0, desc(a0 + off), db, ks > 0);
        wgmma_ss<E>(dq1, desc(a1 + off), db, ks > 0);
      }
      wgmma_commit();
      wgmma_wait<0>();
      store_rows<E>(gdq, ld_qkv, wg * 64 + 16 * wi, T, dq0, lane);
      store_rows<E>(gdq, ld_qkv, (wg + 2) * 64 + 16 * wi, T, dq1, lane);
      keep_q0 = column_sums<E>(wg * 64 + 16 * wi, T, dq0, lane);
      keep_q1 = column_sums<E>((wg + 2) * 64 + 16 * wi, T, dq1, lane);
    } else {
#pragma unroll 1
      for (int u = 0; u < 2; ++u) {
        const int qt = wg + 2 * u;
        if (qt >= NT) break;
        float dq[32];
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < KS; ++ks)
          wgmma_ss<E>(dq, desc(d_base + (ks >> 2) * kTile + qt * kBox + 32 * (ks & 3)), desc(k_base + ks * 2048),
                      ks > 0);
        wgmma_commit();
        wgmma_wait<0>();
        store_rows<E>(gdq, ld_qkv, qt * 64 + 16 * wi, T, dq, lane);
        const float2 s = column_sums<E>(qt * 64 + 16 * wi, T, dq, lane);
        if (u == 0) keep_q0 = s; else keep_q1 = s;
      }
    }
    __syncthreads();  // dS and K free
    // The next item's K, V and O load under the bias fold and the next
    // item's wait.
    if (tid == 0 && next < items) load_k_v_o(next);
    if (bias_partial) {
      // This sample's row of the bias-gradient partials, the head's columns:
      // each warp's 16-row sums (dQ, dK, dV) into dS's chunk 1, then the
      // 16-row blocks added in row order.
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const int t = wg + 2 * u, blk = t * 4 + wi;
        if (t < NT && blk < nb) {
          float* row = s_sums + blk * kBiasCols + 8 * g + c2;
          *reinterpret_cast<float2*>(row) = u == 0 ? keep_q0 : keep_q1;
          *reinterpret_cast<float2*>(row + kHS) = u == 0 ? keep_k0 : keep_k1;
          *reinterpret_cast<float2*>(row + 2 * kHS) = u == 0 ? keep_v0 : keep_v1;
        }
      }
      __syncthreads();
      for (int j = tid; j < kBiasCols; j += kThreads) {
        float t = 0.0f;
        for (int w = 0; w < nb; ++w) t += s_sums[w * kBiasCols + j];
        bias_partial[static_cast<int64_t>(item / NH) * 3 * C + (j / kHS) * C + (item % NH) * kHS + j % kHS] = t;
      }
      // (The next item's first writes into chunk 1, phase 1's dS, come after
      // its first round's barrier.)
    }
  }
#else
  __trap();  // only the sm_90a build of this kernel does the work
#endif
}

// The forward (see attention_sm90a.h): persistent blocks, one an SM, each
// taking the (b, h) items blockIdx.x, + gridDim.x, ... in turn. Two stages of
// shared memory, each as the backward's layout for Q, K and V (4 tiles of 64
// rows, rows past T zeros) with its mbarrier: one thread loads item i + 2
// into a stage as soon as both warpgroups are done with item i there, so
// the loads of the next item run under this one's products. NK = ceil(T /
// 16): the keys run as NK * 16, in chunks of 64 and a last one of 16 to 64
// (S = Q K^T by m64nN wgmma, N = that chunk's keys). Warpgroup w takes query
// tiles w and w + 2: S, row maxima and P = exp2 of the scaled differences
// (unnormalised, rounded to E) as A fragments, the row sums in fp32; then
// O = P V, divided by the row sums and stored with the statistics. (Issuing
// the next tile's S with this tile's P V would overlap them, but S, P and O
// together need more than 255 registers from 160 keys on: ptxas spills.)
constexpr int kFwdThreads = 256;
constexpr size_t kFwdStage = 3 * kTile;
constexpr size_t kFwdSmem = 2 * kFwdStage + 64;

template <typename E, int NK>
__global__ void __launch_bounds__(kFwdThreads, 1)
    sm90a_attention_forward_kernel(E* out, float* __restrict__ stats, int T, int NH, int items, float scale,
                                   const __grid_constant__ CUtensorMap tm_qkv) {
#ifdef VIT_SM90A_DEVICE
  constexpr int FULL = (NK - 1) / 4;    // chunks of 64 keys before the last
  constexpr int TAIL = NK - 4 * FULL;   // the last chunk's keys / 16 (1 .. 4)
  constexpr int NC = FULL + 1;          // chunks = 64-row tiles = ceil(T / 64)
  extern __shared__ __align__(1024) unsigned char smem[];
  if (smem_addr(smem) & 1023) __trap();  // the swizzled tiles need 1024-byte alignment
  uint64_t* s_bar = reinterpret_cast<uint64_t*>(smem + 2 * kFwdStage);  // one a stage

  const int C = NH * kHS;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2, wi = warp & 3;
  const int g = lane >> 2, c2 = 2 * (lane & 3);
  if (tid == 0) {
    mbar_init(s_bar, 1);
    mbar_init(s_bar + 1, 1);
  }
  __syncthreads();
  // Q, K and V of item `item` into stage st (by one thread).
  auto load = [&](int item, int st) {
    const int b = item / NH, h = item % NH;
    unsigned char* base = smem + st * kFwdStage;
    mbar_expect_tx(s_bar + st, 3 * NC * kBox);
    for (int t = 0; t < NC; ++t) {
      tma_load_3d(base + kTile + t * kBox, &tm_qkv, C + h * kHS, t * 64, b, s_bar + st);
      tma_load_3d(base + t * kBox, &tm_qkv, h * kHS, t * 64, b, s_bar + st);
    }
    for (int t = 0; t < NC; ++t)
      tma_load_3d(base + 2 * kTile + t * kBox, &tm_qkv, 2 * C + h * kHS, t * 64, b, s_bar + st);
  };
  const int first = static_cast<int>(blockIdx.x), stride = static_cast<int>(gridDim.x);
  if (tid == 0) {
    load(first, 0);
    if (first + stride < items) load(first + stride, 1);
  }
  const float sl2 = scale * 1.4426950408889634f;
#pragma unroll 1
  for (int it = 0, item = first; item < items; ++it, item += stride) {
    const int st = it & 1;
    const int b = item / NH, h = item % NH;
    const uint32_t q_base = smem_addr(smem + st * kFwdStage), k_base = q_base + kTile, v_base = q_base + 2 * kTile;
    E* gout = out + static_cast<int64_t>(b) * T * C + h * kHS;
    float* gst = stats + static_cast<int64_t>(item) * T;
    mbar_wait(s_bar + st, (it >> 1) & 1);
#pragma unroll 1
    for (int u = 0; u < 2; ++u) {
      const int qt = wg + 2 * u;
      if (qt >= NC) break;
      float s[NC][32];  // S of one query tile: 64 queries x NK * 16 keys
      wgmma_fence();
#pragma unroll
      for (int c = 0; c < FULL; ++c) {
#pragma unroll
        for (int ks = 0; ks < 4; ++ks)
          wgmma_ss_kk<E, 64>(s[c], desc(q_base + qt * kBox + 32 * ks), desc(k_base + c * kBox + 32 * ks), ks > 0);
      }
#pragma unroll
      for (int ks = 0; ks < 4; ++ks)
        wgmma_ss_kk<E, 16 * TAIL>(s[FULL], desc(q_base + qt * kBox + 32 * ks), desc(k_base + FULL * kBox + 32 * ks),
                                  ks > 0);
      wgmma_commit();
      wgmma_wait<0>();
      // Row maxima (rows g and g + 8 of this warp's 16; a row's 4 lanes share
      // it), the padded keys past T left out.
      float m0 = -INFINITY, m1 = -INFINITY;
#pragma unroll
      for (int c = 0; c < NC; ++c) {
#pragma unroll
        for (int j = 0; j < (c < FULL ? 8 : 2 * TAIL); ++j) {
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            float& v = s[c][4 * j + r];
            if (c == FULL && 64 * c + 8 * j + c2 + (r & 1) >= T) v = -INFINITY;
            if (r < 2) m0 = fmaxf(m0, v); else m1 = fmaxf(m1, v);
          }
        }
      }
      m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, 1));
      m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, 2));
      m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, 1));
      m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, 2));
      const float ms0 = m0 * sl2, ms1 = m1 * sl2;
      // P = exp2((S - max) scale log2e), unnormalised, as A fragments of 16
      // keys; the row sums in fp32 from the unrounded values.
      uint32_t pa[NK][4];
      float l0 = 0.0f, l1 = 0.0f;
#pragma unroll
      for (int k = 0; k < NK; ++k) {
#pragma unroll
        for (int hi = 0; hi < 2; ++hi) {
          const float* v = &s[k >> 2][4 * (2 * (k & 3) + hi)];
          const float p0 = fast_exp2(fmaf(v[0], sl2, -ms0)), p1 = fast_exp2(fmaf(v[1], sl2, -ms0));
          const float p2 = fast_exp2(fmaf(v[2], sl2, -ms1)), p3 = fast_exp2(fmaf(v[3], sl2, -ms1));
          l0 += p0 + p1;
          l1 += p2 + p3;
          pa[k][2 * hi] = pack2<E>(p0, p1);
          pa[k][2 * hi + 1] = pack2<E>(p2, p3);
        }
      }
      // O = P V over the keys in steps of 16 (V MN-major).
      float o[32];
      wgmma_fence();
#pragma unroll
      for (int k = 0; k < NK; ++k) wgmma_rs<E, 1>(o, pa[k], desc(v_base + k * 2048), k > 0);
      wgmma_commit();
      l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
      l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
      l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
      l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
      const int r0 = qt * 64 + 16 * wi + g;
      if ((lane & 3) == 0) {  // the natural-log softmax statistics cuDNN's backward reads
        if (r0 < T) gst[r0] = m0 * scale + logf(l0);
        if (r0 + 8 < T) gst[r0 + 8] = m1 * scale + logf(l1);
      }
      const float i0 = 1.0f / l0, i1 = 1.0f / l1;
      wgmma_wait<0>();
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        o[4 * j] *= i0;
        o[4 * j + 1] *= i0;
        o[4 * j + 2] *= i1;
        o[4 * j + 3] *= i1;
      }
      store_rows<E>(gout, C, qt * 64 + 16 * wi, T, o, lane);
    }
    __syncthreads();  // both warpgroups are done with this stage
    if (tid == 0 && item + 2 * stride < items) load(item + 2 * stride, st);
  }
#else
  __trap();  // only the sm_90a build of this kernel does the work
#endif
}

typedef CUresult (*EncodeTiled)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// cuTensorMapEncodeTiled from the driver, found once.
EncodeTiled encode_tiled() {
  static std::once_flag once;
  static EncodeTiled fn = nullptr;
  std::call_once(once, [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) ==
            cudaSuccess &&
        q == cudaDriverEntryPointSuccess)
      fn = reinterpret_cast<EncodeTiled>(p);
    cudaGetLastError();  // a failed lookup leaves no error behind
  });
  return fn;
}

// A (cols, T, B) tensor of 16-bit elements, rows cols apart: 64 x 64 boxes,
// 128-byte swizzle, zeros past the bounds.
CUtensorMap make_map(DType dt, const void* ptr, int64_t cols, int64_t T, int64_t B) {
  CUtensorMap m;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(T), static_cast<cuuint64_t>(B)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(cols * 2), static_cast<cuuint64_t>(T * cols * 2)};
  const cuuint32_t box[3] = {64, 64, 1};
  const cuuint32_t es[3] = {1, 1, 1};
  const CUresult r = encode_tiled()(&m, dt == DType::BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
                                    3, const_cast<void*>(ptr), dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                    CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                    CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  VIT_CHECK(r == CUDA_SUCCESS, "sm90a attention: cuTensorMapEncodeTiled failed (", static_cast<int>(r),
            ") for a (", cols, ", ", T, ", ", B, ") tensor");
  return m;
}

template <typename E, int KS>
void launch(GpuHandles& h, int64_t B, int64_t T, int64_t NH, void* dqkv, const CUtensorMap& tq, const CUtensorMap& to,
            const CUtensorMap& tdo, const float* stats, float scale, float* bias_partial, int64_t max_blocks) {
  allow_dynamic_smem(sm90a_attention_backward_kernel<E, KS>, kSmem);
  const int64_t items = B * NH;
  int64_t grid = std::min<int64_t>(items, std::max(1, h.num_sms));  // persistent: one an SM
  if (max_blocks > 0) grid = std::min(grid, max_blocks);
  sm90a_attention_backward_kernel<E, KS><<<static_cast<unsigned>(grid), kThreads, kSmem, h.stream>>>(
      static_cast<E*>(dqkv), stats, static_cast<int>(T), static_cast<int>(NH), static_cast<int>(items), scale,
      bias_partial, tq, to, tdo);
}

// The instantiation for KS = ceil(T / 16) (1 .. 16).
template <typename E, int... I>
void launch_ks(std::integer_sequence<int, I...>, GpuHandles& h, int64_t B, int64_t T, int64_t NH, void* dqkv,
               const CUtensorMap& tq, const CUtensorMap& to, const CUtensorMap& tdo, const float* stats, float scale,
               float* bias_partial, int64_t max_blocks) {
  const int ks = static_cast<int>((T + 15) / 16);
  VIT_CHECK(ks >= 1 && ks <= static_cast<int>(sizeof...(I)), "sm90a_attention_backward: no kernel for ", T,
            " tokens");  // never launch nothing and return
  ((ks == I + 1 ? launch<E, I + 1>(h, B, T, NH, dqkv, tq, to, tdo, stats, scale, bias_partial, max_blocks) : void()),
   ...);
}

template <typename E, int NK>
void launch_forward(GpuHandles& h, int64_t B, int64_t T, int64_t NH, void* out, float* stats, float scale,
                    const CUtensorMap& tq, int64_t max_blocks) {
  allow_dynamic_smem(sm90a_attention_forward_kernel<E, NK>, kFwdSmem);
  int64_t grid = std::min<int64_t>(B * NH, std::max(1, h.num_sms));  // persistent: one an SM
  if (max_blocks > 0) grid = std::min(grid, max_blocks);
  const int64_t items = B * NH;
  sm90a_attention_forward_kernel<E, NK><<<static_cast<unsigned>(grid), kFwdThreads, kFwdSmem, h.stream>>>(
      static_cast<E*>(out), stats, static_cast<int>(T), static_cast<int>(NH), static_cast<int>(items), scale, tq);
}

// The instantiation for NK = ceil(T / 16) (1 .. 16).
template <typename E, int... I>
void launch_forward_nk(std::integer_sequence<int, I...>, GpuHandles& h, int64_t B, int64_t T, int64_t NH, void* out,
                       float* stats, float scale, const CUtensorMap& tq, int64_t max_blocks) {
  const int nk = static_cast<int>((T + 15) / 16);
  VIT_CHECK(nk >= 1 && nk <= static_cast<int>(sizeof...(I)), "sm90a_attention_forward: no kernel for ", T,
            " tokens");  // never launch nothing and return
  ((nk == I + 1 ? launch_forward<E, I + 1>(h, B, T, NH, out, stats, scale, tq, max_blocks) : void()), ...);
}

// What both kernels need: compute capability 9.x, bf16/fp16, head size 64,
// 1 <= T <= 256, `smem` bytes of shared memory a block, the tensor-map
// encoder. `what` names the kernel in the reason.
bool fits(const GpuHandles& h, DType dt, int64_t T, int64_t HS, size_t smem, const char* what, std::string* why) {
  auto no = [&](std::string s) {
    if (why) *why = str_cat(what, " ", s);
    return false;
  };
  if (h.cc_major != 9) return no("needs a Hopper GPU (compute capability 9.x)");
  if (dt != DType::BF16 && dt != DType::F16) return no("runs bf16/fp16 only");
  if (HS != kHS) return no(str_cat("needs head size ", kHS, ", not ", HS));
  if (T < 1 || T > kRows) return no(str_cat("runs up to ", kRows, " tokens, not ", T));
  if (static_cast<size_t>(h.smem_optin) < smem)
    return no(str_cat("needs ", smem, " bytes of shared memory a block, the GPU has ", h.smem_optin));
  if (!encode_tiled()) return no("needs the driver's cuTensorMapEncodeTiled, which it does not offer");
  if (why) why->clear();
  return true;
}

// What both kernels' launches need of their arguments: 16-byte aligned
// pointers (the tensor copies) and B * NH (sample, head) items a grid may count.
void check_args(const char* op, std::initializer_list<const void*> ptrs, int64_t items) {
  for (const void* p : ptrs)
    VIT_CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0, op, ": pointers must be 16-byte aligned");
  VIT_CHECK(items <= 0x7fffffff, op, ": B * NH = ", items, " is too large for one grid");
}

}  // namespace

bool sm90a_attention_backward_fits(const GpuHandles& h, DType dt, int64_t T, int64_t HS, std::string* why) {
  return fits(h, dt, T, HS, kSmem, "the wgmma backward", why);
}

void sm90a_attention_backward(GpuHandles& h, DType dt, int64_t B, int64_t T, int64_t NH, void* dqkv, const void* qkv,
                              const void* out, const void* dout, const float* stats, float scale,
                              float* bias_partial, int64_t max_blocks) {
  std::string why;
  VIT_CHECK(sm90a_attention_backward_fits(h, dt, T, kHS, &why), "sm90a_attention_backward: ", why);
  check_args("sm90a_attention_backward", {dqkv, qkv, out, dout, stats}, B * NH);
  const int64_t C = NH * kHS;
  const CUtensorMap tq = make_map(dt, qkv, 3 * C, T, B), to = make_map(dt, out, C, T, B),
                    tdo = make_map(dt, dout, C, T, B);
  if (dt == DType::BF16)
    launch_ks<bf16>(std::make_integer_sequence<int, 16>{}, h, B, T, NH, dqkv, tq, to, tdo, stats, scale, bias_partial,
                    max_blocks);
  else
    launch_ks<fp16>(std::make_integer_sequence<int, 16>{}, h, B, T, NH, dqkv, tq, to, tdo, stats, scale, bias_partial,
                    max_blocks);
  VIT_CUDA_CHECK_LAUNCH();
}

bool sm90a_attention_forward_fits(const GpuHandles& h, DType dt, int64_t T, int64_t HS, std::string* why) {
  return fits(h, dt, T, HS, kFwdSmem, "the wgmma forward", why);
}

void sm90a_attention_forward(GpuHandles& h, DType dt, int64_t B, int64_t T, int64_t NH, void* out, const void* qkv,
                             float* stats, float scale, int64_t max_blocks) {
  std::string why;
  VIT_CHECK(sm90a_attention_forward_fits(h, dt, T, kHS, &why), "sm90a_attention_forward: ", why);
  check_args("sm90a_attention_forward", {out, qkv, stats}, B * NH);
  const CUtensorMap tq = make_map(dt, qkv, 3 * NH * kHS, T, B);
  if (dt == DType::BF16)
    launch_forward_nk<bf16>(std::make_integer_sequence<int, 16>{}, h, B, T, NH, out, stats, scale, tq, max_blocks);
  else
    launch_forward_nk<fp16>(std::make_integer_sequence<int, 16>{}, h, B, T, NH, out, stats, scale, tq, max_blocks);
  VIT_CUDA_CHECK_LAUNCH();
}

}  // namespace vit::kernels
