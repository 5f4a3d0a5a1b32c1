// LayerNorm on the GPU (see layernorm.h), statistics in fp32.
//
// Forward: one warp per row. Mean first, then the variance around it (two
// passes over the row, the second from L1, instead of E[x^2] - mean^2, which
// cancels badly when |mean| >> std), then the normalised row. mean and rstd
// are saved for the backward pass. residual_layernorm_forward is the same
// kernel reading the row as the residual sum a + b (rounded to the storage
// type, as residual_add stores it), which its first pass also writes out:
// the bits of residual_add followed by layernorm_forward, one pass less.
// Where a lane's share of the row is at most 4 packs of 16 bytes (ViT-B/16:
// 3 in 16 bits) the row is read once into registers and the passes run
// there (layernorm_forward_regs_kernel: the same sums in the same order, the
// same bits; 1.28 -> 1.03 ms a step at batch 256 on the H200). VIT_LN_FWD_ROWS=1
// in the environment keeps the kernel that reads the row three times (A/B
// runs and the test that both give the same bits).
//
// Backward, per row with xhat = (x - mean) * rstd and g = dout * weight:
//   dinp += rstd * (g - mean(g) - xhat * mean(g * xhat))
//   dweight += dout * xhat,   dbias += dout   (summed over all rows)
// The parameter gradients are a reduction over M rows. To stay
// deterministic (the same bits on every run, which the multi-rank tests lean
// on) nothing uses float atomics: each warp sums its rows into its own
// registers (layernorm_backward_cached_kernel with kRegSums, when a lane's share of the row
// is at most 4 packs: ViT-B/16 in 16 bits) or its own slice of shared memory (wider rows), each
// block folds its warps in a fixed order into one partial row, and a fold
// (column_sum.h: a kernel of its own, or one launch with the block's other
// folds when they are deferred) adds the partials in block order into
// dweight/dbias.
//
// dinp_colsum (optional): the column sums of dinp as stored after the +=,
// which is the bias gradient of the linear layer whose output gradient dinp
// is (ViT: the residual stream's gradient, which proj's and fc2's biases
// sum). The register kernel with row stages adds them as it stores each row
// (kColSum: a third slice of shared memory a warp, folded like the others)
// where two of its blocks still fit an SM; otherwise, and for every other
// kernel, a column sum over dinp follows.
#include <cstdlib>
#include <type_traits>

#include "kernels/column_sum.h"
#include "kernels/cuda_common.cuh"
#include "kernels/layernorm.h"

namespace vit::kernels {
namespace {

using namespace cuda_detail;

constexpr int kWarps = 4;  // warps per block

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Visits the channels of one row that belong to this lane: packs of P when
// kVec, single channels otherwise. f(c, x_vals...) gets the channel index of
// the first element and the element count (P or 1).
template <typename T, bool kVec>
struct RowWalk {
  static constexpr int P = kVec ? Pack<T>::N : 1;
};

// The row's values: inp's, or with kAdd the residual sum inp + inp2 rounded
// to T (the bits residual_add would store), which the first pass writes to
// sum_out. Later passes make the sum again from inp and inp2 rather than
// read sum_out back (the loads go through the read-only cache).
template <typename T, bool kVec, bool kAdd>
__device__ __forceinline__ Pack<T> row_values(const T* __restrict__ x, const T* __restrict__ x2, int c) {
  Pack<T> v;
  if constexpr (kVec) {
    v = load_pack(x + c);
    if constexpr (kAdd) {
      const Pack<T> u = load_pack(x2 + c);
#pragma unroll
      for (int j = 0; j < Pack<T>::N; ++j) v.v[j] = from_f<T>(to_f(v.v[j]) + to_f(u.v[j]));
    }
  } else {
    v.v[0] = kAdd ? from_f<T>(to_f(x[c]) + to_f(x2[c])) : x[c];
  }
  return v;
}

template <typename T, bool kVec, bool kAdd>
__global__ void layernorm_forward_kernel(T* __restrict__ out, float* __restrict__ mean_out,
                                         float* __restrict__ rstd_out, T* __restrict__ sum_out,
                                         const T* __restrict__ inp, const T* __restrict__ inp2,
                                         const T* __restrict__ weight, const T* __restrict__ bias, int64_t M,
                                         int C, float eps) {
  constexpr int P = RowWalk<T, kVec>::P;
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= M) return;
  const T* x = inp + row * C;
  const T* x2 = kAdd ? inp2 + row * C : nullptr;
  T* y = out + row * C;

  float s = 0.0f;
  for (int c = lane * P; c < C; c += 32 * P) {
    const Pack<T> v = row_values<T, kVec, kAdd>(x, x2, c);
    if constexpr (kAdd) {
      if constexpr (kVec) {
        store_pack(sum_out + row * C + c, v);
      } else {
        sum_out[row * C + c] = v.v[0];
      }
    }
#pragma unroll
    for (int j = 0; j < P; ++j) s += to_f(v.v[j]);
  }
  const float mean = warp_sum(s) / C;
  float q = 0.0f;
  for (int c = lane * P; c < C; c += 32 * P) {
    const Pack<T> v = row_values<T, kVec, kAdd>(x, x2, c);
#pragma unroll
    for (int j = 0; j < P; ++j) {
      const float d = to_f(v.v[j]) - mean;
      q += d * d;
    }
  }
  const float rstd = rsqrtf(warp_sum(q) / C + eps);
  for (int c = lane * P; c < C; c += 32 * P) {
    const Pack<T> v = row_values<T, kVec, kAdd>(x, x2, c);
    if constexpr (kVec) {
      Pack<T> w = load_pack(weight + c), b = load_pack(bias + c), r;
#pragma unroll
      for (int j = 0; j < P; ++j) r.v[j] = from_f<T>((to_f(v.v[j]) - mean) * rstd * to_f(w.v[j]) + to_f(b.v[j]));
      store_pack(y + c, r);
    } else {
      y[c] = from_f<T>((to_f(v.v[0]) - mean) * rstd * to_f(weight[c]) + to_f(bias[c]));
    }
  }
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// The same for rows whose lane share is at most kK packs (ViT-B/16: 3 in
// 16 bits): the row is read once into registers and the three passes run on
// them, so a warp waits for memory once instead of three times. The sums
// run in the order above (the lane's packs ascending, then warp_sum), so the
// outputs and statistics are the same bits.
template <typename T, bool kAdd, int kK>
__global__ void layernorm_forward_regs_kernel(T* __restrict__ out, float* __restrict__ mean_out,
                                              float* __restrict__ rstd_out, T* __restrict__ sum_out,
                                              const T* __restrict__ inp, const T* __restrict__ inp2,
                                              const T* __restrict__ weight, const T* __restrict__ bias, int64_t M,
                                              int C, float eps) {
  constexpr int P = Pack<T>::N;
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (row >= M) return;
  const T* x = inp + row * C;
  const T* x2 = kAdd ? inp2 + row * C : nullptr;
  Pack<T> v[kK];
#pragma unroll
  for (int k = 0; k < kK; ++k) {  // every load issued before any use
    const int c = (k * 32 + lane) * P;
    if (c < C) v[k] = load_pack(x + c);
  }
  if constexpr (kAdd) {
#pragma unroll
    for (int k = 0; k < kK; ++k) {
      const int c = (k * 32 + lane) * P;
      if (c < C) {
        const Pack<T> u = load_pack(x2 + c);
#pragma unroll
        for (int j = 0; j < P; ++j) v[k].v[j] = from_f<T>(to_f(v[k].v[j]) + to_f(u.v[j]));
        store_pack(sum_out + row * C + c, v[k]);
      }
    }
  }
  float s = 0.0f;
#pragma unroll
  for (int k = 0; k < kK; ++k) {
    if ((k * 32 + lane) * P < C) {
#pragma unroll
      for (int j = 0; j < P; ++j) s += to_f(v[k].v[j]);
    }
  }
  const float mean = warp_sum(s) / C;
  float q = 0.0f;
#pragma unroll
  for (int k = 0; k < kK; ++k) {
    if ((k * 32 + lane) * P < C) {
#pragma unroll
      for (int j = 0; j < P; ++j) {
        const float d = to_f(v[k].v[j]) - mean;
        q += d * d;
      }
    }
  }
  const float rstd = rsqrtf(warp_sum(q) / C + eps);
  T* y = out + row * C;
#pragma unroll
  for (int k = 0; k < kK; ++k) {
    const int c = (k * 32 + lane) * P;
    if (c < C) {
      const Pack<T> w = load_pack(weight + c), b = load_pack(bias + c);
      Pack<T> r;
#pragma unroll
      for (int j = 0; j < P; ++j) r.v[j] = from_f<T>((to_f(v[k].v[j]) - mean) * rstd * to_f(w.v[j]) + to_f(b.v[j]));
      store_pack(y + c, r);
    }
  }
  if (lane == 0) {
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  }
}

// Shared-memory accumulators: per warp, dweight then dbias, each padded to
// Cpad = C rounded up to 32 * P. Lane `lane` owns the channels
// c = (k * 32 + lane) * P + j and keeps channel c at slot (k * P + j) * 32 +
// lane, so the 32 lanes of a warp hit 32 consecutive words (no bank
// conflicts), whatever the pack width.
__device__ __forceinline__ int acc_slot(int k, int j, int lane, int P) { return (k * P + j) * 32 + lane; }

// The warps' slices of shared memory (warp w's R rows of Cpad floats, acc_slot
// layout, at src + w * R * Cpad) added in warp order into part (R, C).
template <int kW, int R>
__device__ __forceinline__ void fold_warp_slices(const float* src, float* __restrict__ part, int C, int Cpad, int P) {
  for (int i = threadIdx.x; i < R * Cpad; i += blockDim.x) {
    const int which = i / Cpad, slot = i % Cpad;
    const int l = slot % 32, rest = slot / 32;
    const int c = ((rest / P) * 32 + l) * P + rest % P;
    if (c >= C) continue;
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < kW; ++w) s += src[static_cast<int64_t>(w) * R * Cpad + i];
    part[which * C + c] = s;
  }
}

// The block's partial row: the warps' slices (dweight then dbias, each
// 2 * Cpad floats) into partial[blockIdx.x] (2, C), once every warp is done.
template <int kW>
__device__ __forceinline__ void write_block_partial(const float* smem, float* __restrict__ partial, int C, int Cpad,
                                                    int P) {
  __syncthreads();
  fold_warp_slices<kW, 2>(smem, partial + static_cast<int64_t>(blockIdx.x) * 2 * C, C, Cpad, P);
}

// partial (gridDim.x, 2, C): this block's sums.
template <typename T, bool kVec>
__global__ void layernorm_backward_kernel(T* __restrict__ dinp, float* __restrict__ partial,
                                          const T* __restrict__ dout, const T* __restrict__ inp,
                                          const T* __restrict__ weight, const float* __restrict__ mean,
                                          const float* __restrict__ rstd, int64_t M, int C, int Cpad,
                                          int /*region: the cached kernel's launch arguments*/) {
  constexpr int P = RowWalk<T, kVec>::P;
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* dw_acc = smem + static_cast<int64_t>(warp) * 2 * Cpad;
  float* db_acc = dw_acc + Cpad;
  for (int i = lane; i < 2 * Cpad; i += 32) dw_acc[i] = 0.0f;
  __syncwarp();

  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + warp; row < M;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const T* x = inp + row * C;
    const T* g = dout + row * C;
    T* dx = dinp + row * C;
    const float mu = mean[row], rs = rstd[row];
    float sum_g = 0.0f, sum_gx = 0.0f;
    for (int k = 0; (k * 32 + lane) * P < C; ++k) {
      const int c = (k * 32 + lane) * P;
      if constexpr (kVec) {
        Pack<T> xv = load_pack(x + c), gv = load_pack(g + c), wv = load_pack(weight + c);
#pragma unroll
        for (int j = 0; j < P; ++j) {
          const float xh = (to_f(xv.v[j]) - mu) * rs;
          const float go = to_f(gv.v[j]);
          const float gn = go * to_f(wv.v[j]);
          sum_g += gn;
          sum_gx += gn * xh;
          const int slot = acc_slot(k, j, lane, P);
          dw_acc[slot] += go * xh;
          db_acc[slot] += go;
        }
      } else {
        const float xh = (to_f(x[c]) - mu) * rs;
        const float go = to_f(g[c]);
        const float gn = go * to_f(weight[c]);
        sum_g += gn;
        sum_gx += gn * xh;
        dw_acc[c] += go * xh;
        db_acc[c] += go;
      }
    }
    const float mean_g = warp_sum(sum_g) / C;
    const float mean_gx = warp_sum(sum_gx) / C;
    for (int c = lane * P; c < C; c += 32 * P) {
      if constexpr (kVec) {
        Pack<T> xv = load_pack(x + c), gv = load_pack(g + c), wv = load_pack(weight + c);
        Pack<T> dv = *reinterpret_cast<const Pack<T>*>(dx + c);
#pragma unroll
        for (int j = 0; j < P; ++j) {
          const float xh = (to_f(xv.v[j]) - mu) * rs;
          const float gn = to_f(gv.v[j]) * to_f(wv.v[j]);
          dv.v[j] = from_f<T>(to_f(dv.v[j]) + rs * (gn - mean_g - xh * mean_gx));
        }
        store_pack(dx + c, dv);
      } else {
        const float xh = (to_f(x[c]) - mu) * rs;
        const float gn = to_f(g[c]) * to_f(weight[c]);
        dx[c] = from_f<T>(to_f(dx[c]) + rs * (gn - mean_g - xh * mean_gx));
      }
    }
  }
  write_block_partial<kWarps>(smem, partial, C, Cpad, P);
}

// The same with each lane's kPacks packs of x and dout kept in registers
// between the two passes over a row (C <= 32 * P * kPacks): the row is read
// from memory once, which matters because the shared-memory accumulators
// leave little L1 to cache it. Blocks of kW warps.
// kRegSums: the parameter-gradient sums in registers as well (kPacks <= 4
// packs a lane; ViT-B/16 in 16 bits: 3). Lane `lane` always owns the same
// channels, so it adds each row's dout * xhat and dout into its own registers
// and nothing touches shared memory's sums inside the row loop; a couple of
// blocks of kRegWarps warps per SM, each warp walking many rows (a fixed
// assignment, so the sums' order and bits are the same on every run), park
// their registers in shared memory at the end, and fewer blocks leave fewer
// partial rows to fold. With so few warps per SM a
// row's loads would leave the SM waiting on memory, so each warp copies its
// next row (x, dout, dinp) into a second shared-memory stage with cp.async
// while it works on the current one; a lane copies and reads only its own
// channels, so it waits only for its own copies. The stages and the parked
// sums share the shared memory (a barrier between). The stages (kStage) are
// for 16-bit rows only (72 KiB a block for ViT-B/16; fp32 rows would need up to
// 192 KiB) and where the GPU lets a block have them; otherwise each warp
// loads its row directly. Without kRegSums (5-6
// packs: ViT-B/16 in fp32, or 16-bit rows of 1025-1536) each warp adds into
// its shared-memory slice row by row and loads the row directly.
constexpr int kRegWarps = 8;

// Shared memory of layernorm_backward_cached_kernel: the warps' sum slices
// (2 * Cpad floats each) and, with kStage, the warps' two row stages
// (3 * Cpad elements each) over the same bytes; with kColSum then the warps'
// column-sum slices of dinp (Cpad floats each), which live through the rows.
template <typename T>
size_t cached_backward_region(bool stage, int warps, int Cpad) {
  const size_t sums = sizeof(float) * warps * 2 * static_cast<size_t>(Cpad);
  const size_t stages = stage ? sizeof(T) * warps * 2 * 3 * static_cast<size_t>(Cpad) : 0;
  return sums > stages ? sums : stages;
}
template <typename T>
size_t cached_backward_smem(bool stage, int warps, int Cpad, bool colsum = false) {
  return cached_backward_region<T>(stage, warps, Cpad) +
         (colsum ? sizeof(float) * warps * static_cast<size_t>(Cpad) : 0);
}

// kColSum (with kStage): partial (gridDim.x, 2, C) and then (gridDim.x, C),
// the column sums of dinp as stored; `region` is cached_backward_region in
// floats.
template <typename T, int kPacks, int kW, bool kRegSums, bool kStage, bool kColSum = false>
__global__ void __launch_bounds__(kW * 32, kRegSums && kPacks <= 3 ? 2 : 1)  // 2 blocks an SM: <= 128 registers
    layernorm_backward_cached_kernel(T* __restrict__ dinp, float* __restrict__ partial, const T* __restrict__ dout,
                                     const T* __restrict__ inp, const T* __restrict__ weight,
                                     const float* __restrict__ mean, const float* __restrict__ rstd, int64_t M,
                                     int C, int Cpad, int region = 0) {
  constexpr int P = Pack<T>::N;
  constexpr int kRegs = kRegSums ? kPacks * P : 1;
  static_assert(kRegSums || !kStage, "the stages overlap the sum slices, which only kRegSums leaves free");
  static_assert(!kColSum || kStage, "the column sums of dinp ride on the staged register kernel");
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* dw_acc = smem + static_cast<int64_t>(warp) * 2 * Cpad;
  float* db_acc = dw_acc + Cpad;
  float* cs_acc = smem + region + static_cast<int64_t>(warp) * Cpad;  // kColSum: this warp's column sums of dinp
  if constexpr (kColSum) {
    for (int i = lane; i < Cpad; i += 32) cs_acc[i] = 0.0f;
    __syncwarp();
  }
  // With kStage: this warp's stages [2][x, dout, dinp][Cpad].
  T* stages = reinterpret_cast<T*>(smem) + static_cast<int64_t>(warp) * 2 * 3 * Cpad;
  float dw[kRegs], db[kRegs];
#pragma unroll
  for (int i = 0; i < kRegs; ++i) dw[i] = db[i] = 0.0f;
  if constexpr (!kRegSums) {
    for (int i = lane; i < 2 * Cpad; i += 32) dw_acc[i] = 0.0f;
    __syncwarp();
  }
  const int64_t step = static_cast<int64_t>(gridDim.x) * kW;
  // One commit group per row (empty past the last row, so the wait below
  // always leaves exactly the next row's group in flight).
  auto stage_row = [&](int64_t row, int st) {
    if (row < M) {
      T* dst = stages + st * 3 * Cpad;
#pragma unroll
      for (int k = 0; k < kPacks; ++k) {
        const int c = (k * 32 + lane) * P;
        if (c < C) {
          cp_async16(dst + c, inp + row * C + c);
          cp_async16(dst + Cpad + c, dout + row * C + c);
          cp_async16(dst + 2 * Cpad + c, dinp + row * C + c);
        }
      }
    }
    cp_async_commit();
  };
  int st = 0;
  if constexpr (kStage) stage_row(static_cast<int64_t>(blockIdx.x) * kW + warp, 0);

  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kW + warp; row < M; row += step, st ^= 1) {
    T* dx = dinp + row * C;
    Pack<T> xv[kPacks], gv[kPacks], dv[kPacks];
    if constexpr (kStage) {
      // The previous row's reads of stage st ^ 1 are done (their values were
      // used before this point), so the next row may land there.
      stage_row(row + step, st ^ 1);
      cp_async_wait<1>();
      const T* src = stages + st * 3 * Cpad;
#pragma unroll
      for (int k = 0; k < kPacks; ++k) {
        const int c = (k * 32 + lane) * P;
        if (c < C) {
          xv[k] = *reinterpret_cast<const Pack<T>*>(src + c);
          gv[k] = *reinterpret_cast<const Pack<T>*>(src + Cpad + c);
          dv[k] = *reinterpret_cast<const Pack<T>*>(src + 2 * Cpad + c);
        }
      }
    } else {
      const T* x = inp + row * C;
      const T* g = dout + row * C;
#pragma unroll
      for (int k = 0; k < kPacks; ++k) {
        const int c = (k * 32 + lane) * P;
        if (c < C) {
          xv[k] = load_pack(x + c);
          gv[k] = load_pack(g + c);
          dv[k] = *reinterpret_cast<const Pack<T>*>(dx + c);
        }
      }
    }
    const float mu = mean[row], rs = rstd[row];
    float sum_g = 0.0f, sum_gx = 0.0f;
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const int c = (k * 32 + lane) * P;
      if (c < C) {
        const Pack<T> wv = load_pack(weight + c);
#pragma unroll
        for (int j = 0; j < P; ++j) {
          const float xh = (to_f(xv[k].v[j]) - mu) * rs;
          const float go = to_f(gv[k].v[j]);
          const float gn = go * to_f(wv.v[j]);
          sum_g += gn;
          sum_gx += gn * xh;
          if constexpr (kRegSums) {
            dw[k * P + j] += go * xh;
            db[k * P + j] += go;
          } else {
            const int slot = acc_slot(k, j, lane, P);
            dw_acc[slot] += go * xh;
            db_acc[slot] += go;
          }
        }
      }
    }
    const float mean_g = warp_sum(sum_g) / C;
    const float mean_gx = warp_sum(sum_gx) / C;
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      const int c = (k * 32 + lane) * P;
      if (c < C) {
        const Pack<T> wv = load_pack(weight + c);
#pragma unroll
        for (int j = 0; j < P; ++j) {
          const float xh = (to_f(xv[k].v[j]) - mu) * rs;
          const float gn = to_f(gv[k].v[j]) * to_f(wv.v[j]);
          dv[k].v[j] = from_f<T>(to_f(dv[k].v[j]) + rs * (gn - mean_g - xh * mean_gx));
          if constexpr (kColSum) cs_acc[acc_slot(k, j, lane, P)] += to_f(dv[k].v[j]);  // as stored
        }
        store_pack(dx + c, dv[k]);
      }
    }
  }
  if constexpr (kRegSums) {  // park the registers in the warp's slice (acc_slot layout)
    if constexpr (kStage) {
      cp_async_wait<0>();  // (only empty groups are left)
      __syncthreads();     // every warp is done with its stages, which the slices overlap
    }
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
#pragma unroll
      for (int j = 0; j < P; ++j) {
        const int slot = acc_slot(k, j, lane, P);
        if (slot < Cpad) {
          dw_acc[slot] = dw[k * P + j];
          db_acc[slot] = db[k * P + j];
        }
      }
    }
  }
  write_block_partial<kW>(smem, partial, C, Cpad, P);
  // The column sums of dinp into row blockIdx.x of the (gridDim.x, C) partials
  // after the (gridDim.x, 2, C) ones (write_block_partial's barrier has passed).
  if constexpr (kColSum)
    fold_warp_slices<kW, 1>(smem + region,
                            partial + static_cast<int64_t>(gridDim.x) * 2 * C + static_cast<int64_t>(blockIdx.x) * C,
                            C, Cpad, P);
}

}  // namespace

namespace cuda {

namespace {

// LayerNorm of inp, or with `sum` defined of sum = inp + inp2 (kAdd).
void launch_layernorm_forward(const Context& ctx, const char* op, Tensor sum, Tensor out, Tensor mean, Tensor rstd,
                              const Tensor& inp, const Tensor& inp2, const Tensor& weight, const Tensor& bias,
                              float eps) {
  gpu_of(ctx, op);
  for (auto* t : {&out, &mean, &rstd}) check_gpu(*t, op, "out/mean/rstd");
  check_gpu(inp, op, "inp");
  check_gpu(weight, op, "weight");
  check_gpu(bias, op, "bias");
  const int C = static_cast<int>(inp.dim(-1));
  const int64_t M = inp.numel() / C;
  const DType dt = inp.dtype;
  check_dtype(out, dt, op, "out");
  check_dtype(weight, dt, op, "weight");
  check_dtype(bias, dt, op, "bias");
  check_dtype(mean, DType::F32, op, "mean");
  check_dtype(rstd, DType::F32, op, "rstd");
  check_numel(out, M * C, op, "out");
  check_numel(weight, C, op, "weight");
  check_numel(bias, C, op, "bias");
  check_numel(mean, M, op, "mean");
  check_numel(rstd, M, op, "rstd");
  const bool add = sum.defined();
  if (add) {
    check_gpu(sum, op, "sum");
    check_gpu(inp2, op, "b");
    check_dtype(sum, dt, op, "sum");
    check_dtype(inp2, dt, op, "b");
    check_numel(sum, M * C, op, "sum");
    check_numel(inp2, M * C, op, "b");
    VIT_CHECK(sum.data != inp.data && sum.data != inp2.data && sum.data != out.data, op,
              ": sum must not alias a, b or out");
  }
  cudaStream_t s = stream_of(ctx);
  const unsigned grid = static_cast<unsigned>((M + kWarps - 1) / kWarps);
  VIT_DTYPE_SWITCH(dt, T, {
    const bool vec = C % Pack<T>::N == 0 && aligned16(out.data) && aligned16(inp.data) &&
                     aligned16(weight.data) && aligned16(bias.data) &&
                     (!add || (aligned16(sum.data) && aligned16(inp2.data)));
    T* so = add ? sum.as<T>() : nullptr;
    const T* b2 = add ? inp2.as<T>() : nullptr;
    // Packs a lane holds of a row: up to 4 in registers (the row read once).
    const int packs = (C + 32 * Pack<T>::N - 1) / (32 * Pack<T>::N);
    auto regs = [&](auto add_c) {
      auto launch = [&](auto k_c) {
        layernorm_forward_regs_kernel<T, decltype(add_c)::value, decltype(k_c)::value><<<grid, kWarps * 32, 0, s>>>(
            out.as<T>(), mean.f32(), rstd.f32(), so, inp.as<T>(), b2, weight.as<T>(), bias.as<T>(), M, C, eps);
      };
      switch (packs) {
        case 1: launch(std::integral_constant<int, 1>{}); break;
        case 2: launch(std::integral_constant<int, 2>{}); break;
        case 3: launch(std::integral_constant<int, 3>{}); break;
        default: launch(std::integral_constant<int, 4>{}); break;
      }
    };
    if (vec && packs <= 4 && std::getenv("VIT_LN_FWD_ROWS") == nullptr) {
      if (add) {
        regs(std::true_type{});
      } else {
        regs(std::false_type{});
      }
    } else if (vec && add) {
      layernorm_forward_kernel<T, true, true><<<grid, kWarps * 32, 0, s>>>(
          out.as<T>(), mean.f32(), rstd.f32(), so, inp.as<T>(), b2, weight.as<T>(), bias.as<T>(), M, C, eps);
    } else if (vec) {
      layernorm_forward_kernel<T, true, false><<<grid, kWarps * 32, 0, s>>>(
          out.as<T>(), mean.f32(), rstd.f32(), so, inp.as<T>(), b2, weight.as<T>(), bias.as<T>(), M, C, eps);
    } else if (add) {
      layernorm_forward_kernel<T, false, true><<<grid, kWarps * 32, 0, s>>>(
          out.as<T>(), mean.f32(), rstd.f32(), so, inp.as<T>(), b2, weight.as<T>(), bias.as<T>(), M, C, eps);
    } else {
      layernorm_forward_kernel<T, false, false><<<grid, kWarps * 32, 0, s>>>(
          out.as<T>(), mean.f32(), rstd.f32(), so, inp.as<T>(), b2, weight.as<T>(), bias.as<T>(), M, C, eps);
    }
  });
  VIT_CUDA_CHECK_LAUNCH();
}

}  // namespace

void layernorm_forward(const Context& ctx, Tensor out, Tensor mean, Tensor rstd, const Tensor& inp,
                       const Tensor& weight, const Tensor& bias, float eps) {
  launch_layernorm_forward(ctx, "layernorm_forward", Tensor(), out, mean, rstd, inp, Tensor(), weight, bias, eps);
}

void residual_layernorm_forward(const Context& ctx, Tensor sum, Tensor out, Tensor mean, Tensor rstd, const Tensor& a,
                                const Tensor& b, const Tensor& weight, const Tensor& bias, float eps) {
  VIT_CHECK(sum.defined(), "residual_layernorm_forward: sum is undefined");
  launch_layernorm_forward(ctx, "residual_layernorm_forward", sum, out, mean, rstd, a, b, weight, bias, eps);
}

void layernorm_backward(const Context& ctx, Tensor dinp, Tensor dweight, Tensor dbias, const Tensor& dout,
                        const Tensor& inp, const Tensor& weight, const Tensor& mean, const Tensor& rstd,
                        bool accumulate, Tensor dinp_colsum, bool colsum_accumulate) {
  const char* op = "layernorm_backward";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(dinp, op, "dinp");
  check_gpu(dweight, op, "dweight");
  check_gpu(dbias, op, "dbias");
  check_gpu(dout, op, "dout");
  check_gpu(inp, op, "inp");
  check_gpu(weight, op, "weight");
  check_gpu(mean, op, "mean");
  check_gpu(rstd, op, "rstd");
  const int C = static_cast<int>(inp.dim(-1));
  const int64_t M = inp.numel() / C;
  const DType dt = inp.dtype;
  check_dtype(dinp, dt, op, "dinp");
  check_dtype(dout, dt, op, "dout");
  check_dtype(weight, dt, op, "weight");
  check_dtype(dweight, DType::F32, op, "dweight");
  check_dtype(dbias, DType::F32, op, "dbias");
  check_numel(dinp, M * C, op, "dinp");
  check_numel(dout, M * C, op, "dout");
  check_numel(dweight, C, op, "dweight");
  check_numel(dbias, C, op, "dbias");
  check_numel(mean, M, op, "mean");
  check_numel(rstd, M, op, "rstd");
  const bool colsum = dinp_colsum.defined();
  if (colsum) {
    check_gpu(dinp_colsum, op, "dinp_colsum");
    check_dtype(dinp_colsum, DType::F32, op, "dinp_colsum");
    check_numel(dinp_colsum, C, op, "dinp_colsum");
  }
  cudaStream_t s = stream_of(ctx);
  int blocks = 0;
  float* partial = nullptr;
  bool fused_colsum = false;  // the kernel summed dinp's columns (the staged register kernel)
  VIT_DTYPE_SWITCH(dt, T, {
    const bool vec = C % Pack<T>::N == 0 && aligned16(dinp.data) && aligned16(dout.data) &&
                     aligned16(inp.data) && aligned16(weight.data);
    const int P = vec ? Pack<T>::N : 1;
    const int Cpad = (C + 32 * P - 1) / (32 * P) * (32 * P);
    const int packs = vec ? (C + 32 * P - 1) / (32 * P) : 0;
    // Register accumulators when a lane's row fits in 4 packs (16-bit: C <=
    // 1024, fp32: C <= 512; about 128 registers a thread): 2 blocks of
    // kRegWarps warps per SM. Otherwise the shared-memory
    // accumulators, with enough warps in flight to cover memory latency (8
    // blocks of 4 warps per SM); the partial rows this leaves (blocks x 2C
    // floats) are small next to the activations.
    const bool regs = vec && packs <= 4;
    const int warps = regs ? kRegWarps : kWarps;
    const int per_sm = regs ? 2 : 8;
    blocks = static_cast<int>(std::max<int64_t>(
        1, std::min<int64_t>((M + warps - 1) / warps, static_cast<int64_t>(h.num_sms) * per_sm)));
    // The row stages: 16-bit rows, where the GPU lets a block have them
    // (and the column-sum slices of dinp beside them when asked for).
    const bool stage = regs && sizeof(T) == 2 &&
                       cached_backward_smem<T>(true, kRegWarps, Cpad) <= static_cast<size_t>(h.smem_optin);
    // Fused only where two such blocks still share an SM (an SM has about
    // smem_optin + 1 KB, each block 1 KB of it reserved): ViT-B/16 98 KB each.
    fused_colsum = colsum && stage &&
                   2 * (cached_backward_smem<T>(true, kRegWarps, Cpad, true) + 1024) <=
                       static_cast<size_t>(h.smem_optin) + 1024;
    partial = fold_partials(h, s, static_cast<size_t>(fused_colsum ? 3 : 2) * C * blocks);
    const size_t smem = cached_backward_smem<T>(stage, warps, Cpad, fused_colsum);
    const int region = static_cast<int>(cached_backward_region<T>(stage, warps, Cpad) / sizeof(float));
    VIT_CHECK(smem <= 200 * 1024, op, ": C = ", C, " is too wide for the shared-memory accumulators");
    auto launch = [&](auto kern, int threads) {
      allow_dynamic_smem(kern, smem);
      kern<<<blocks, threads, smem, s>>>(dinp.as<T>(), partial, dout.as<T>(), inp.as<T>(), weight.as<T>(),
                                         mean.f32(), rstd.f32(), M, C, Cpad, region);
    };
    auto launch_regs = [&](auto packs_c) {
      constexpr int kP = decltype(packs_c)::value;
      if constexpr (sizeof(T) == 2) {
        if (stage && fused_colsum)
          return launch(layernorm_backward_cached_kernel<T, kP, kRegWarps, true, true, true>, kRegWarps * 32);
        if (stage) return launch(layernorm_backward_cached_kernel<T, kP, kRegWarps, true, true>, kRegWarps * 32);
      }
      launch(layernorm_backward_cached_kernel<T, kP, kRegWarps, true, false>, kRegWarps * 32);
    };
    if (regs && packs == 1) {
      launch_regs(std::integral_constant<int, 1>{});
    } else if (regs && packs == 2) {
      launch_regs(std::integral_constant<int, 2>{});
    } else if (regs && packs == 3) {
      launch_regs(std::integral_constant<int, 3>{});
    } else if (regs && packs == 4) {
      launch_regs(std::integral_constant<int, 4>{});
    } else if (packs >= 5 && packs <= 6) {
      launch(layernorm_backward_cached_kernel<T, 6, kWarps, false, false>, kWarps * 32);
    } else if (vec) {
      launch(layernorm_backward_kernel<T, true>, kWarps * 32);
    } else {
      launch(layernorm_backward_kernel<T, false>, kWarps * 32);
    }
  });
  VIT_CUDA_CHECK_LAUNCH();
  // dweight[c] (+)= sum_b partial[b][c], dbias[c] (+)= sum_b partial[b][C + c]:
  // 8 rows of threads split the blocks, then add in a fixed order.
  fold_into(h, s, dweight.f32(), dbias.f32(), C, partial, blocks, 2 * C, 8, accumulate);
  if (fused_colsum)  // dinp_colsum[c] (+)= sum_b partial[2 C blocks + b C + c], the same way
    fold_into(h, s, dinp_colsum.f32(), nullptr, C, partial + static_cast<size_t>(2) * C * blocks, blocks, C, 8,
              colsum_accumulate);
  else if (colsum)  // the other kernels: a column sum over dinp as stored
    column_sum(h, s, dinp_colsum.f32(), dinp.data, dt, M, C, colsum_accumulate);
}

}  // namespace cuda
}  // namespace vit::kernels
