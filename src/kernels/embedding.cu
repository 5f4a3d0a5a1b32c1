// Patch embedding and the token sequence around it, on the GPU (see
// embedding.h).
//
// patchify: one block per (image, patch); thread q takes the patch's pixels
// (ky, kx) = (q / ps, q % ps) and writes their 3 channels to c * ps^2 + q
// (coalesced for each c), with the index arithmetic once per pixel in 32
// bits. The earlier one-thread-per-value kernel spent its time in 64-bit
// divisions (0.37 ms at batch 256, 0.3 TB/s).
// embed_tokens_forward and select_cls_backward: one block per token row.
// embed_tokens_backward: one thread per (t, c) sums dx over the batch in a
// fixed order (deterministic, no atomics), adds it to dpos (and dcls for
// t = 0), and copies the patch tokens' gradient to dpatch_emb on the way.
// images, being uint8, carry no meaningful Tensor dtype; it is not checked.
#include <algorithm>

#include "kernels/cuda_common.cuh"
#include "kernels/embedding.h"

namespace vit::kernels {
namespace {

using namespace cuda_detail;

template <typename T>
__global__ void patchify_kernel(T* __restrict__ patches, const uint8_t* __restrict__ images, int H, int W, int ps) {
  const int gw = W / ps, NP = (H / ps) * gw, pp = ps * ps;
  const int64_t bi = blockIdx.x;  // b * NP + i
  const int i = static_cast<int>(bi % NP);
  const int64_t b = bi / NP;
  const int y0 = (i / gw) * ps, x0 = (i % gw) * ps;
  T* out = patches + bi * 3 * pp;
  for (int q = threadIdx.x; q < pp; q += blockDim.x) {
    const int ky = q / ps, kx = q - ky * ps;
    const uint8_t* px = images + ((b * H + y0 + ky) * W + x0 + kx) * 3;
#pragma unroll
    for (int c = 0; c < 3; ++c) {
      const float v = static_cast<float>(px[c]);
      out[c * pp + q] = from_f<T>((v * (1.0f / 255.0f) - 0.5f) * 2.0f);
    }
  }
}

// One block per token row (b, t) of x: the row's index arithmetic once (the
// one-thread-per-value form did 64-bit divisions for every value and moved
// 0.7 TB/s), its values in 16-byte packs (kVec) or one by one.
template <typename T, bool kVec>
__global__ void embed_forward_kernel(T* __restrict__ x, const T* __restrict__ patch_emb, const T* __restrict__ cls,
                                     const T* __restrict__ pos, int T_, int C) {
  const int64_t row = blockIdx.x;  // b * T_ + t
  const int t = static_cast<int>(row % T_);
  const int64_t b = row / T_;
  const T* src = t == 0 ? cls : patch_emb + (b * (T_ - 1) + (t - 1)) * C;
  const T* p = pos + static_cast<int64_t>(t) * C;
  T* dst = x + row * C;
  if constexpr (kVec) {
    constexpr int P = Pack<T>::N;
    for (int i = threadIdx.x; i < C / P; i += blockDim.x) {
      const Pack<T> a = load_pack(src + i * P), q = load_pack(p + i * P);
      Pack<T> o;
#pragma unroll
      for (int j = 0; j < P; ++j) o.v[j] = from_f<T>(to_f(a.v[j]) + to_f(q.v[j]));
      store_pack(dst + i * P, o);
    }
  } else {
    for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = from_f<T>(to_f(src[c]) + to_f(p[c]));
  }
}

template <typename T>
__global__ void embed_backward_kernel(T* __restrict__ dpatch_emb, float* __restrict__ dcls, float* __restrict__ dpos,
                                      const T* __restrict__ dx, int64_t B, int T_, int C, bool accumulate) {
  const int64_t total = static_cast<int64_t>(T_) * C;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t tc = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; tc < total; tc += stride) {
    const int t = static_cast<int>(tc / C), c = static_cast<int>(tc % C);
    float s = 0.0f;
    for (int64_t b = 0; b < B; ++b) {
      const T g = dx[b * total + tc];
      s += to_f(g);
      if (t > 0 && dpatch_emb) dpatch_emb[(b * (T_ - 1) + (t - 1)) * C + c] = g;
    }
    // 0 + s when assigning: the bits of adding to a zeroed gradient.
    if (dpos) dpos[tc] = (accumulate ? dpos[tc] : 0.0f) + s;
    if (t == 0 && dcls) dcls[c] = (accumulate ? dcls[c] : 0.0f) + s;
  }
}

template <typename T>
__global__ void select_cls_forward_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t B, int T_, int C) {
  const int64_t total = B * C;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t b = idx / C;
    out[idx] = x[b * T_ * C + idx % C];
  }
}

// One block per token row, as embed_forward_kernel: the CLS rows copy dout,
// the others are zero.
template <typename T, bool kVec>
__global__ void select_cls_backward_kernel(T* __restrict__ dx, const T* __restrict__ dout, int T_, int C) {
  const int64_t row = blockIdx.x;
  const int t = static_cast<int>(row % T_);
  const T* src = dout + (row / T_) * C;
  T* dst = dx + row * C;
  if constexpr (kVec) {
    constexpr int P = Pack<T>::N;
    Pack<T> zero;
#pragma unroll
    for (int j = 0; j < P; ++j) zero.v[j] = from_f<T>(0.0f);
    for (int i = threadIdx.x; i < C / P; i += blockDim.x) store_pack(dst + i * P, t == 0 ? load_pack(src + i * P) : zero);
  } else {
    for (int c = threadIdx.x; c < C; c += blockDim.x) dst[c] = t == 0 ? src[c] : from_f<T>(0.0f);
  }
}

// Threads for a row kernel: the row's packs (or values) in whole warps, at most 256.
int row_threads(int64_t items) { return static_cast<int>(std::min<int64_t>(256, std::max<int64_t>(32, (items + 31) / 32 * 32))); }

}  // namespace

namespace cuda {

void patchify(const Context& ctx, Tensor patches, const Tensor& images, int patch_size) {
  const char* op = "patchify";
  gpu_of(ctx, op);  // checks that ctx has a GPU
  check_gpu(patches, op, "patches");
  check_gpu(images, op, "images");
  VIT_CHECK(images.ndim == 4 && images.dim(3) == 3, op, ": images must be (B, H, W, 3), got ", images.shape_str());
  const int64_t B = images.dim(0);
  const int H = static_cast<int>(images.dim(1)), W = static_cast<int>(images.dim(2));
  const int ps = patch_size;
  VIT_CHECK(ps > 0 && H % ps == 0 && W % ps == 0, op, ": image ", H, "x", W, " is not a multiple of patch ", ps);
  const int64_t NP = static_cast<int64_t>(H / ps) * (W / ps), P = 3LL * ps * ps;
  check_numel(patches, B * NP * P, op, "patches");
  if (B == 0) return;
  VIT_CHECK(B * NP <= 0x7fffffff, op, ": ", B * NP, " patches are more than one launch's blocks");
  const int threads = static_cast<int>(std::min<int64_t>(256, (ps * ps + 31) / 32 * 32));
  cudaStream_t s = stream_of(ctx);
  VIT_DTYPE_SWITCH(patches.dtype, T,
                   patchify_kernel<T><<<static_cast<unsigned>(B * NP), threads, 0, s>>>(patches.as<T>(),
                                                                                        images.as<uint8_t>(), H, W, ps));
  VIT_CUDA_CHECK_LAUNCH();
}

void embed_tokens_forward(const Context& ctx, Tensor x, const Tensor& patch_emb, const Tensor& cls,
                          const Tensor& pos) {
  const char* op = "embed_tokens_forward";
  gpu_of(ctx, op);  // checks that ctx has a GPU
  check_gpu(x, op, "x");
  check_gpu(patch_emb, op, "patch_emb");
  check_gpu(cls, op, "cls");
  check_gpu(pos, op, "pos");
  VIT_CHECK(x.ndim == 3, op, ": x must be (B, T, C), got ", x.shape_str());
  const int64_t B = x.dim(0);
  const int T_ = static_cast<int>(x.dim(1)), C = static_cast<int>(x.dim(2));
  for (const Tensor* t : {&patch_emb, &cls, &pos}) check_dtype(*t, x.dtype, op, "patch_emb/cls/pos");
  check_numel(patch_emb, B * (T_ - 1) * C, op, "patch_emb");
  check_numel(cls, C, op, "cls");
  check_numel(pos, static_cast<int64_t>(T_) * C, op, "pos");
  if (B == 0) return;
  VIT_CHECK(B * T_ <= 0x7fffffff, op, ": ", B * T_, " token rows are more than one launch's blocks");
  cudaStream_t s = stream_of(ctx);
  const auto rows = static_cast<unsigned>(B * T_);
  VIT_DTYPE_SWITCH(x.dtype, T, {
    constexpr int P = Pack<T>::N;
    if (C % P == 0 && aligned16(x.data) && aligned16(patch_emb.data) && aligned16(cls.data) && aligned16(pos.data)) {
      embed_forward_kernel<T, true><<<rows, row_threads(C / P), 0, s>>>(x.as<T>(), patch_emb.as<T>(), cls.as<T>(),
                                                                        pos.as<T>(), T_, C);
    } else {
      embed_forward_kernel<T, false><<<rows, row_threads(C), 0, s>>>(x.as<T>(), patch_emb.as<T>(), cls.as<T>(),
                                                                     pos.as<T>(), T_, C);
    }
  });
  VIT_CUDA_CHECK_LAUNCH();
}

void embed_tokens_backward(const Context& ctx, Tensor dpatch_emb, Tensor dcls, Tensor dpos, const Tensor& dx,
                           bool accumulate) {
  const char* op = "embed_tokens_backward";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(dx, op, "dx");
  VIT_CHECK(dx.ndim == 3, op, ": dx must be (B, T, C), got ", dx.shape_str());
  const int64_t B = dx.dim(0);
  const int T_ = static_cast<int>(dx.dim(1)), C = static_cast<int>(dx.dim(2));
  if (dpatch_emb.defined()) {
    check_gpu(dpatch_emb, op, "dpatch_emb");
    check_dtype(dpatch_emb, dx.dtype, op, "dpatch_emb");
    check_numel(dpatch_emb, B * (T_ - 1) * C, op, "dpatch_emb");
  }
  if (dcls.defined()) {
    check_gpu(dcls, op, "dcls");
    check_dtype(dcls, DType::F32, op, "dcls");
    check_numel(dcls, C, op, "dcls");
  }
  if (dpos.defined()) {
    check_gpu(dpos, op, "dpos");
    check_dtype(dpos, DType::F32, op, "dpos");
    check_numel(dpos, static_cast<int64_t>(T_) * C, op, "dpos");
  }
  cudaStream_t s = stream_of(ctx);
  VIT_DTYPE_SWITCH(dx.dtype, T,
                   embed_backward_kernel<T><<<grid_for(static_cast<int64_t>(T_) * C, 128, h.num_sms), 128, 0, s>>>(
                       dpatch_emb.defined() ? dpatch_emb.as<T>() : nullptr, dcls.defined() ? dcls.f32() : nullptr,
                       dpos.defined() ? dpos.f32() : nullptr, dx.as<T>(), B, T_, C, accumulate));
  VIT_CUDA_CHECK_LAUNCH();
}

void select_cls_forward(const Context& ctx, Tensor out, const Tensor& x) {
  const char* op = "select_cls_forward";
  GpuHandles& h = gpu_of(ctx, op);
  check_gpu(out, op, "out");
  check_gpu(x, op, "x");
  VIT_CHECK(x.ndim == 3, op, ": x must be (B, T, C), got ", x.shape_str());
  const int64_t B = x.dim(0);
  const int T_ = static_cast<int>(x.dim(1)), C = static_cast<int>(x.dim(2));
  check_dtype(out, x.dtype, op, "out");
  check_numel(out, B * C, op, "out");
  cudaStream_t s = stream_of(ctx);
  VIT_DTYPE_SWITCH(x.dtype, T,
                   select_cls_forward_kernel<T><<<grid_for(B * C, 256, h.num_sms), 256, 0, s>>>(
                       out.as<T>(), x.as<T>(), B, T_, C));
  VIT_CUDA_CHECK_LAUNCH();
}

void select_cls_backward(const Context& ctx, Tensor dx, const Tensor& dout) {
  const char* op = "select_cls_backward";
  gpu_of(ctx, op);  // checks that ctx has a GPU
  check_gpu(dx, op, "dx");
  check_gpu(dout, op, "dout");
  VIT_CHECK(dx.ndim == 3, op, ": dx must be (B, T, C), got ", dx.shape_str());
  const int64_t B = dx.dim(0);
  const int T_ = static_cast<int>(dx.dim(1)), C = static_cast<int>(dx.dim(2));
  check_dtype(dout, dx.dtype, op, "dout");
  check_numel(dout, B * C, op, "dout");
  if (B == 0) return;
  VIT_CHECK(B * T_ <= 0x7fffffff, op, ": ", B * T_, " token rows are more than one launch's blocks");
  cudaStream_t s = stream_of(ctx);
  const auto rows = static_cast<unsigned>(B * T_);
  VIT_DTYPE_SWITCH(dx.dtype, T, {
    constexpr int P = Pack<T>::N;
    if (C % P == 0 && aligned16(dx.data) && aligned16(dout.data)) {
      select_cls_backward_kernel<T, true><<<rows, row_threads(C / P), 0, s>>>(dx.as<T>(), dout.as<T>(), T_, C);
    } else {
      select_cls_backward_kernel<T, false><<<rows, row_threads(C), 0, s>>>(dx.as<T>(), dout.as<T>(), T_, C);
    }
  });
  VIT_CUDA_CHECK_LAUNCH();
}

}  // namespace cuda
}  // namespace vit::kernels
