// Exact (erf) GELU on the GPU, forward and backward (see gelu.h).
//
// Memory-bound at best: one read and one write per element forward, two
// reads and a write backward (two writes when it also recomputes the
// forward's output). Each thread moves 16-byte packs when the tensors allow
// it (element count a multiple of the pack, 16-byte aligned addresses), the
// arithmetic is in fp32 whatever the storage type.
//   gelu(x)  = x Phi(x),  Phi(x) = 0.5 (1 + erf(x / sqrt 2)) = 0.5 erfc(-x / sqrt 2)
//   gelu'(x) = Phi(x) + x exp(-x^2 / 2) / sqrt(2 pi)
// fp32 storage evaluates erff. For 16-bit storage erff's cost made the
// kernels compute-bound (both of its branches run in a warp of mixed |x|:
// 2.8 TB/s where a plain elementwise pass moves 4.0), so they evaluate
// erfc(z), z = |x| / sqrt 2, as t exp(-z^2) Q(t) with t = 1 / (1 + 0.4 z)
// and Q a degree-8 polynomial (least-squares fit of erfc(z) exp(z^2) / t,
// relative weights, tools/fit_erfc.py): about 1e-7 relative in exact
// arithmetic, a few 1e-6 in fp32 including the tail (x -> -inf), where
// 1 + erf(x / sqrt 2) would cancel. The exponential is shared with gelu'.
// That is far below a 16-bit rounding step (bf16 2^-8, fp16 2^-11): over a
// sweep of inputs the result is the correctly rounded value but for a few
// fp16 values (test_kernels_gpu's gelu_correctly_rounded_16bit).
#include <type_traits>

#include "kernels/column_sum.cuh"
#include "kernels/cuda_common.cuh"
#include "kernels/gelu.h"

namespace vit::kernels {
namespace {

using namespace cuda_detail;

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Phi(x) and exp(-x^2 / 2), for 16-bit storage (see the top of the file).
struct NormalParts {
  float cdf, e;
};
__device__ __forceinline__ NormalParts normal_parts_fast(float x) {
  const float z = fabsf(x) * kInvSqrt2;
  const float t = __fdividef(1.0f, fmaf(0.4f, z, 1.0f));
  float q = 5.018728971e-02f;
  q = fmaf(q, t, -1.826153398e-01f);
  q = fmaf(q, t, 1.686438620e-01f);
  q = fmaf(q, t, -5.255409982e-03f);
  q = fmaf(q, t, 1.412773430e-01f);
  q = fmaf(q, t, 1.685781777e-01f);
  q = fmaf(q, t, 2.078385800e-01f);
  q = fmaf(q, t, 2.256697714e-01f);
  q = fmaf(q, t, 2.256758660e-01f);                            // Q(t)
  const float e = ex2_approx(-(z * z) * 1.44269504088896341f);  // exp(-z^2) = exp(-x^2 / 2)
  const float half_erfc = 0.5f * t * e * q;
  return {x >= 0.0f ? 1.0f - half_erfc : half_erfc, e};
}

template <typename T>
__device__ __forceinline__ float gelu_f(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
  } else {
    return x * normal_parts_fast(x).cdf;
  }
}
template <typename T>
__device__ __forceinline__ float gelu_grad_f(float x) {
  if constexpr (std::is_same_v<T, float>) {
    const float cdf = 0.5f * (1.0f + erff(x * kInvSqrt2));
    const float pdf = kInvSqrt2Pi * __expf(-0.5f * x * x);
    return cdf + x * pdf;
  } else {
    const NormalParts n = normal_parts_fast(x);
    return n.cdf + x * (kInvSqrt2Pi * n.e);
  }
}

template <typename T, bool kVec>
__global__ void gelu_forward_kernel(T* __restrict__ out, const T* __restrict__ inp, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if constexpr (kVec) {
    constexpr int P = Pack<T>::N;
    for (int64_t i = tid; i < n / P; i += stride) {
      Pack<T> x = load_pack(inp + i * P);
      Pack<T> y;
#pragma unroll
      for (int j = 0; j < P; ++j) y.v[j] = from_f<T>(gelu_f<T>(to_f(x.v[j])));
      store_pack(out + i * P, y);
    }
  } else {
    for (int64_t i = tid; i < n; i += stride) out[i] = from_f<T>(gelu_f<T>(to_f(inp[i])));
  }
}

// kOut: also write out = gelu(inp) (backward with recompute). out may alias
// dout and dinp may alias inp (each read first, element by element), so
// none of them is __restrict__.
template <typename T, bool kVec, bool kOut>
__global__ void gelu_backward_kernel(T* dinp, T* out, const T* inp, const T* dout, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if constexpr (kVec) {
    constexpr int P = Pack<T>::N;
    for (int64_t i = tid; i < n / P; i += stride) {
      Pack<T> x = load_pack(inp + i * P);
      Pack<T> g = load_pack(dout + i * P);
      Pack<T> y;
#pragma unroll
      for (int j = 0; j < P; ++j) y.v[j] = from_f<T>(to_f(g.v[j]) * gelu_grad_f<T>(to_f(x.v[j])));
      store_pack(dinp + i * P, y);
      if constexpr (kOut) {
#pragma unroll
        for (int j = 0; j < P; ++j) y.v[j] = from_f<T>(gelu_f<T>(to_f(x.v[j])));
        store_pack(out + i * P, y);
      }
    }
  } else {
    for (int64_t i = tid; i < n; i += stride) {
      const float x = to_f(inp[i]);
      dinp[i] = from_f<T>(to_f(dout[i]) * gelu_grad_f<T>(x));
      if constexpr (kOut) out[i] = from_f<T>(gelu_f<T>(x));
    }
  }
}

// The backward as a column-sum op (column_sum.cuh): one pack of dinp (and,
// kOut, of out) per call, whose stored dinp values the pass sums per column
// into the bias gradient.
template <typename T, bool kOut>
struct GeluBackwardOp {
  // One row ahead a thread (its loads go out before this row's arithmetic),
  // 2 blocks of 512 an SM (64 registers; the accumulators do not fit the
  // elementwise kernel's 32); 1 with the recompute's second output (78).
  static constexpr int kDepth = 1;
  static constexpr int kMinBlocks = kOut ? 1 : 2;
  T* dinp;  // may alias inp (see gelu_backward_kernel)
  T* out;   // may alias dout
  const T* inp;
  const T* dout;
  struct Loaded {
    Pack<T> x, g;
  };
  __device__ __forceinline__ Loaded load(int64_t i) const { return {load_pack(inp + i), load_pack(dout + i)}; }
  __device__ __forceinline__ Pack<T> apply(const Loaded& v, int64_t i) const {
    Pack<T> y;
#pragma unroll
    for (int j = 0; j < Pack<T>::N; ++j) y.v[j] = from_f<T>(to_f(v.g.v[j]) * gelu_grad_f<T>(to_f(v.x.v[j])));
    store_pack(dinp + i, y);
    if constexpr (kOut) {
      Pack<T> o;
#pragma unroll
      for (int j = 0; j < Pack<T>::N; ++j) o.v[j] = from_f<T>(gelu_f<T>(to_f(v.x.v[j])));
      store_pack(out + i, o);
    }
    return y;
  }
};

}  // namespace

namespace cuda {

void gelu_forward(const Context& ctx, Tensor out, const Tensor& inp) {
  const char* op = "gelu_forward";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(out, op, "out");
  check_gpu(inp, op, "inp");
  check_dtype(out, inp.dtype, op, "out");
  const int64_t n = inp.numel();
  check_numel(out, n, op, "out");
  cudaStream_t s = stream_of(ctx);
  VIT_DTYPE_SWITCH(inp.dtype, T, {
    constexpr int P = Pack<T>::N;
    if (n % P == 0 && aligned16(out.data) && aligned16(inp.data)) {
      gelu_forward_kernel<T, true><<<grid_for(n / P, 256, h.num_sms), 256, 0, s>>>(out.as<T>(), inp.as<T>(), n);
    } else {
      gelu_forward_kernel<T, false><<<grid_for(n, 256, h.num_sms), 256, 0, s>>>(out.as<T>(), inp.as<T>(), n);
    }
  });
  VIT_CUDA_CHECK_LAUNCH();
}

namespace {

// dinp = dout * gelu'(inp), and with `out` defined out = gelu(inp); with
// dbias defined, dbias (+)= dinp's column sums (gelu.h).
void gelu_backward_launch(const Context& ctx, const char* op, Tensor dinp, Tensor out, const Tensor& inp,
                          const Tensor& dout, const Tensor& dbias, bool accumulate) {
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(dinp, op, "dinp");
  check_gpu(inp, op, "inp");
  check_gpu(dout, op, "dout");
  check_dtype(dinp, inp.dtype, op, "dinp");
  check_dtype(dout, inp.dtype, op, "dout");
  const int64_t n = inp.numel();
  check_numel(dinp, n, op, "dinp");
  check_numel(dout, n, op, "dout");
  const bool with_out = out.defined();
  if (with_out) {
    check_gpu(out, op, "out");
    check_dtype(out, inp.dtype, op, "out");
    check_numel(out, n, op, "out");
    VIT_CHECK(dinp.data != out.data && dinp.data != dout.data, op,
              ": dinp must not alias out or dout (it may be inp)");
  }
  int64_t C = 0;
  if (dbias.defined()) {
    check_gpu(dbias, op, "dbias");
    check_dtype(dbias, DType::F32, op, "dbias");
    C = dbias.numel();
    VIT_CHECK(C > 0 && n % C == 0, op, ": dbias has ", C, " elements, which do not divide dinp's ", n,
              " into rows");
  }
  cudaStream_t s = stream_of(ctx);
  VIT_DTYPE_SWITCH(inp.dtype, T, {
    constexpr int P = Pack<T>::N;
    const bool vec = n % P == 0 && aligned16(dinp.data) && aligned16(inp.data) && aligned16(dout.data) &&
                     (!with_out || aligned16(out.data));
    T* o = with_out ? out.as<T>() : nullptr;
    if (C > 0 && vec && C % P == 0) {  // the backward and the bias gradient in one pass
      // With the recompute in the plain backward's launch shape: the same
      // bias-gradient bits (train.recompute_gelu gives the stored run's
      // gradients), the 78-register kernel in two waves where the plain one
      // fits two blocks an SM.
      if (with_out) {
        column_sum_launch<T, GeluBackwardOp<T, true>, GeluBackwardOp<T, false>>(
            h, s, dbias.f32(), n / C, C, GeluBackwardOp<T, true>{dinp.as<T>(), o, inp.as<T>(), dout.as<T>()},
            accumulate);
      } else {
        column_sum_launch<T>(h, s, dbias.f32(), n / C, C,
                             GeluBackwardOp<T, false>{dinp.as<T>(), o, inp.as<T>(), dout.as<T>()}, accumulate);
      }
      return;
    }
    const unsigned grid = vec ? grid_for(n / P, 256, h.num_sms) : grid_for(n, 256, h.num_sms);
    if (vec && with_out) {
      gelu_backward_kernel<T, true, true><<<grid, 256, 0, s>>>(dinp.as<T>(), o, inp.as<T>(), dout.as<T>(), n);
    } else if (vec) {
      gelu_backward_kernel<T, true, false><<<grid, 256, 0, s>>>(dinp.as<T>(), o, inp.as<T>(), dout.as<T>(), n);
    } else if (with_out) {
      gelu_backward_kernel<T, false, true><<<grid, 256, 0, s>>>(dinp.as<T>(), o, inp.as<T>(), dout.as<T>(), n);
    } else {
      gelu_backward_kernel<T, false, false><<<grid, 256, 0, s>>>(dinp.as<T>(), o, inp.as<T>(), dout.as<T>(), n);
    }
  });
  VIT_CUDA_CHECK_LAUNCH();
  if (C > 0) column_sum(h, s, dbias.f32(), dinp.data, dinp.dtype, n / C, C, accumulate);  // unpacked shapes
}

}  // namespace

void gelu_backward(const Context& ctx, Tensor dinp, const Tensor& inp, const Tensor& dout, Tensor dbias,
                   bool accumulate) {
  gelu_backward_launch(ctx, "gelu_backward", dinp, Tensor(), inp, dout, dbias, accumulate);
}

void gelu_backward_recompute(const Context& ctx, Tensor dinp, Tensor out, const Tensor& inp, const Tensor& dout,
                             Tensor dbias, bool accumulate) {
  VIT_CHECK(out.defined(), "gelu_backward_recompute: out is undefined");
  gelu_backward_launch(ctx, "gelu_backward_recompute", dinp, out, inp, dout, dbias, accumulate);
}

}  // namespace cuda
}  // namespace vit::kernels
