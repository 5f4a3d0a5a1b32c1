// Per-op GPU timings at ViT-B/16 shapes, so that the lead sees where a
// training step's time goes (not a ctest test; run by hand on the GPU):
//
//   bench_kernels [--batch 64] [--dtype bf16] [--reps 20] [--eager 1]
//                 [--attention-tokens "192 197 208"]
//
// --attention-tokens times only the default attention path (cuDNN's, with
// vit_hpc's kernels where they run) at each of those sequence lengths, the
// backward also in the short kernel's mma.sync form: how the kernels' time
// follows their tiles (197 tokens run as 4 tiles of 64 keys, 192 as 3).
//
// Graphs matter for the short kernels: launched one by one from the host, a
// 3 us kernel is timed at the host's launch rate instead (about 10 us for a
// column sum's two launches at batch 32). --eager 1 times launches from the
// host as before; an op whose calls cannot be captured is timed that way
// and marked "(eager)".
// Each op runs a few times to warm up (plans, arenas, module loading), then
// `reps` back-to-back calls, captured as one CUDA graph as the training step
// runs them, are timed with CUDA events around a replay, five times; the
// median of the five, divided by reps, is printed with the achieved rate
// (TFLOP/s for matrix work, GB/s for memory-bound kernels, counting each
// input read once and each output written once). Inputs are random, never
// zeros. The last table adds the ops up into one ViT-B/16 training step
// (12 blocks forward + backward, patch embedding, AdamW over all 86M
// parameters, gradient norm) for each attention path.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/cuda_check.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/graph.h"
#include "core/tensor.h"
#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/cast.h"
#include "kernels/column_sum.h"
#include "kernels/cross_entropy.h"
#include "kernels/gelu.h"
#include "kernels/gpu_context.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"
#include "kernels/residual.h"

using namespace vit;
namespace K = vit::kernels;

namespace {

// A device buffer with random contents in [-scale, scale], never zero.
struct Dev {
  Buffer buf;
  Tensor t;
  Dev(DType dt, std::vector<int64_t> shape, float scale = 1.0f) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    buf = Buffer(static_cast<size_t>(n) * dtype_size(dt), Device::CUDA);
    t.data = buf.data();
    t.dtype = dt;
    t.device = Device::CUDA;
    t.ndim = static_cast<int>(shape.size());
    for (int i = 0; i < t.ndim; ++i) t.shape[i] = shape[i];
    // Random chunk of up to 4M elements, repeated through the buffer.
    const int64_t chunk = std::min<int64_t>(n, int64_t(1) << 22);
    std::vector<uint8_t> host(static_cast<size_t>(chunk) * dtype_size(dt));
    static uint64_t state = 0x9e3779b97f4a7c15ull;
    for (int64_t i = 0; i < chunk; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      float v = (static_cast<float>((state >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f) * scale;
      if (v == 0.0f) v = scale * 0.5f;
      if (dt == DType::F32) {
        std::memcpy(&host[4 * i], &v, 4);
      } else {
        const uint16_t b = dt == DType::BF16 ? float_to_bf16(v).bits : float_to_f16(v).bits;
        std::memcpy(&host[2 * i], &b, 2);
      }
    }
    const size_t cb = host.size(), total = buf.bytes();
    for (size_t off = 0; off < total; off += cb) {
      copy_bytes(static_cast<char*>(buf.data()) + off, Device::CUDA, host.data(), Device::CPU, std::min(cb, total - off));
    }
  }
};

struct Result {
  std::string name;
  double ms;
  double work;  // flops or bytes
  bool flops;
};

class Bench {
 public:
  Bench(GpuRuntime& rt, int reps, bool eager) : rt_(rt), reps_(reps), eager_(eager) {
    VIT_CUDA_CHECK(cudaEventCreate(&a_));
    VIT_CUDA_CHECK(cudaEventCreate(&b_));
  }
  ~Bench() {
    cudaEventDestroy(a_);
    cudaEventDestroy(b_);
  }
  double time(const std::string& name, double work, bool flops, const std::function<void()>& fn) {
    auto stream = static_cast<cudaStream_t>(rt_.context().stream);
    // reps calls as one graph (GraphCache: the first run eager, which also
    // warms up plans and arenas, the second captures, the rest replay).
    GraphCache graph(1);
    const auto all = [&] {
      for (int r = 0; r < reps_; ++r) fn();
    };
    const auto run = [&] {
      if (eager_) {
        all();
      } else {
        graph.run({1}, stream, all, [] {});
      }
    };
    for (int i = 0; i < 3; ++i) run();
    rt_.synchronize();
    std::vector<float> trials;
    for (int t = 0; t < 5; ++t) {
      VIT_CUDA_CHECK(cudaEventRecord(a_, stream));
      run();
      VIT_CUDA_CHECK(cudaEventRecord(b_, stream));
      VIT_CUDA_CHECK(cudaEventSynchronize(b_));
      float ms = 0;
      VIT_CUDA_CHECK(cudaEventElapsedTime(&ms, a_, b_));
      trials.push_back(ms / reps_);
    }
    std::sort(trials.begin(), trials.end());
    const double ms = trials[2];
    results_.push_back({name, ms, work, flops});
    by_name_[name] = ms;
    const double rate = work / (ms * 1e-3);
    const bool eager = eager_ || graph.off() || graph.replays() == 0;
    std::printf("%-44s %9.3f ms  %8.1f %s   (spread %.3f-%.3f)%s\n", name.c_str(), ms,
                flops ? rate / 1e12 : rate / 1e9, flops ? "TFLOP/s" : "GB/s   ", trials.front(), trials.back(),
                eager && !eager_ ? " (eager)" : "");
    if (eager && !eager_ && graph.off()) std::printf("  (not captured: %s)\n", graph.note().c_str());
    std::fflush(stdout);
    return ms;
  }
  double ms(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? 0.0 : it->second;
  }

 private:
  GpuRuntime& rt_;
  int reps_;
  bool eager_;  // --eager 1: launched from the host one by one
  cudaEvent_t a_, b_;
  std::vector<Result> results_;
  std::map<std::string, double> by_name_;
};

}  // namespace

int main(int argc, char** argv) {
  int64_t B = 64;
  DType dt = DType::BF16;
  int reps = 20;
  bool eager = false;
  std::vector<int64_t> attention_tokens;
  for (int i = 1; i < argc; i += 2) {
    const std::string k = argv[i];
    if (i + 1 == argc) {
      std::fprintf(stderr, "bench_kernels: %s needs a value\n", k.c_str());
      return 2;
    }
    if (k == "--batch") B = std::atoll(argv[i + 1]);
    else if (k == "--dtype") dt = parse_dtype(argv[i + 1]);
    else if (k == "--reps") reps = std::atoi(argv[i + 1]);
    else if (k == "--eager") eager = std::atoi(argv[i + 1]) != 0;
    else if (k == "--attention-tokens") {
      for (const char* c = argv[i + 1]; *c;) {
        char* end = nullptr;
        const long long v = std::strtoll(c, &end, 10);
        if (end == c) break;
        if (v < 1) {
          std::fprintf(stderr, "bench_kernels: --attention-tokens takes lengths >= 1, not %lld\n", v);
          return 2;
        }
        attention_tokens.push_back(v);
        c = end;
      }
      if (attention_tokens.empty()) {
        std::fprintf(stderr, "bench_kernels: --attention-tokens takes a list of lengths, e.g. \"192 197\"\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "bench_kernels: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  try {
    GpuRuntime rt(0, /*tf32=*/true);
    Context ctx = rt.context();
    cudaDeviceProp prop{};
    VIT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const int64_t T = 197, C = 768, NH = 12, HS = 64, F = 3072, M = B * T, NP = 196, P = 768, L = 12;
    const double e = static_cast<double>(dtype_size(dt));
    std::printf("bench_kernels: %s, ViT-B/16, batch %lld, %s%s, %d reps x 5 trials (median), %s\n", prop.name,
                static_cast<long long>(B), dtype_name(dt), dt == DType::F32 ? " (GEMMs in TF32)" : "", reps,
                eager ? "launched one by one from the host" : "replayed as a CUDA graph");

    Bench bench(rt, reps, eager);
    if (!attention_tokens.empty()) {
      const K::AttentionImpl impl = K::AttentionImpl::CuDNN;
      for (int64_t Ta : attention_tokens) {
        const std::string n = " T=" + std::to_string(Ta);
        const double fl = 4.0 * B * NH * Ta * Ta * HS;
        Dev qkv(dt, {B, Ta, 3 * C}, 2.0f), out(dt, {B, Ta, C}), dout(dt, {B, Ta, C}), dqkv(dt, {B, Ta, 3 * C});
        Dev dbq(DType::F32, {3 * C});
        Buffer aux(K::attention_aux_bytes(Device::CUDA, impl, dt, B, Ta, NH), Device::CUDA);
        Tensor aux_t(aux.data(), DType::F32, Device::CUDA, {static_cast<int64_t>(aux.bytes() / 4)});
        bench.time("attention fwd" + n, fl, true, [&] { K::attention_forward(ctx, out.t, aux_t, qkv.t, NH, impl); });
        bench.time("attention bwd +db of qkv" + n, 2 * fl, true,
                   [&] { K::attention_backward(ctx, dqkv.t, dout.t, qkv.t, out.t, aux_t, NH, impl, dbq.t); });
        rt.set_attention_backward_wgmma(false);
        bench.time("attention bwd +db of qkv, mma.sync form" + n, 2 * fl, true,
                   [&] { K::attention_backward(ctx, dqkv.t, dout.t, qkv.t, out.t, aux_t, NH, impl, dbq.t); });
        rt.set_attention_backward_wgmma(true);
      }
      return 0;
    }
    // Linear layers: name, N (out), K (in).
    struct Lin {
      const char* name;
      int64_t N, K;
      bool gelu;
    };
    const Lin lins[] = {{"qkv", 3 * C, C, false}, {"proj", C, C, false}, {"fc1", F, C, true}, {"fc2", C, F, false}};
    for (const Lin& l : lins) {
      Dev x(dt, {M, l.K}), w(dt, {l.N, l.K}, 0.03f), b(dt, {l.N}), y(dt, {M, l.N}), pre(dt, {M, l.N});
      Dev dy(dt, {M, l.N}), dx(dt, {M, l.K}), dw(DType::F32, {l.N, l.K}), db(DType::F32, {l.N});
      Dev dpre(dt, {l.gelu ? M : 1, l.N});
      const double fl = 2.0 * M * l.N * l.K;
      const std::string n = l.name;
      bench.time("matmul fwd " + n + (l.gelu ? " +gelu(exact)" : ""), fl, true, [&] {
        K::matmul_forward(ctx, y.t, l.gelu ? pre.t : Tensor(), x.t, w.t, b.t);
      });
      if (l.gelu) bench.time("  of which gelu fwd", 2.0 * M * l.N * e, false, [&] { K::gelu_forward(ctx, y.t, pre.t); });
      bench.time("matmul bwd " + n + " (dinp+dW+db)", 2 * fl, true,
                 [&] { K::matmul_backward(ctx, dx.t, dw.t, db.t, dy.t, x.t, w.t); });
      bench.time("matmul bwd " + n + " (dinp+dW)", 2 * fl, true,
                 [&] { K::matmul_backward(ctx, dx.t, dw.t, Tensor(), dy.t, x.t, w.t); });
      if (l.gelu) {
        bench.time("gelu bwd", 3.0 * M * l.N * e, false, [&] { K::gelu_backward(ctx, dpre.t, pre.t, dy.t); });
        // As the model runs fc1's backward: its bias gradient summed by the GELU backward.
        bench.time("gelu bwd +db of fc1", 3.0 * M * l.N * e, false,
                   [&] { K::gelu_backward(ctx, dpre.t, pre.t, dy.t, db.t); });
      }
    }
    // Bias gradients alone: the column sums of an (M, N) output gradient.
    for (int64_t n : {C, 3 * C, F}) {
      Dev g(dt, {M, n}), db(DType::F32, {n});
      bench.time("column sum (bias grad) " + std::to_string(M) + "x" + std::to_string(n), 1.0 * M * n * e, false, [&] {
        kernels::cuda_detail::column_sum(*ctx.gpu, static_cast<cudaStream_t>(ctx.stream), db.t.f32(), g.t.data, dt,
                                         M, n, true);
      });
    }
    {
      Dev x(dt, {B * NP, P}), w(dt, {C, P}, 0.03f), b(dt, {C}), y(dt, {B * NP, C}), dy(dt, {B * NP, C}),
          dw(DType::F32, {C, P}), db(DType::F32, {C});
      const double fl = 2.0 * B * NP * C * P;
      bench.time("matmul fwd patch-embed", fl, true, [&] { K::matmul_forward(ctx, y.t, Tensor(), x.t, w.t, b.t); });
      bench.time("matmul bwd patch-embed (dW+db)", fl, true,
                 [&] { K::matmul_backward(ctx, Tensor(), dw.t, db.t, dy.t, x.t, w.t); });
    }
    // Attention, both paths.
    const double attn_fl = 4.0 * B * NH * T * T * HS;
    for (K::AttentionImpl impl : {K::AttentionImpl::CuDNN, K::AttentionImpl::Cublas}) {
      const std::string n = impl == K::AttentionImpl::CuDNN ? "cudnn" : "cublas";
      Dev qkv(dt, {B, T, 3 * C}, 2.0f), out(dt, {B, T, C}), dout(dt, {B, T, C}), dqkv(dt, {B, T, 3 * C});
      Buffer aux(K::attention_aux_bytes(Device::CUDA, impl, dt, B, T, NH), Device::CUDA);
      Tensor aux_t(aux.data(), DType::F32, Device::CUDA, {static_cast<int64_t>(aux.bytes() / 4)});
      try {
        bench.time("attention fwd " + n, attn_fl, true,
                   [&] { K::attention_forward(ctx, out.t, aux_t, qkv.t, NH, impl); });
        if (impl == K::AttentionImpl::CuDNN) {
          // The line above ran the wgmma forward on a Hopper GPU; cuDNN's beside it.
          rt.set_attention_forward_wgmma(false);
          bench.time("attention fwd cudnn (cuDNN's fused kernel)", attn_fl, true,
                     [&] { K::attention_forward(ctx, out.t, aux_t, qkv.t, NH, impl); });
          rt.set_attention_forward_wgmma(true);
        }
        bench.time("attention bwd " + n, 2 * attn_fl, true,
                   [&] { K::attention_backward(ctx, dqkv.t, dout.t, qkv.t, out.t, aux_t, NH, impl); });
        // As the model runs it: with the QKV projection's bias gradient.
        Dev dbq(DType::F32, {3 * C});
        bench.time("attention bwd " + n + " +db of qkv", 2 * attn_fl, true,
                   [&] { K::attention_backward(ctx, dqkv.t, dout.t, qkv.t, out.t, aux_t, NH, impl, dbq.t); });
        if (impl == K::AttentionImpl::CuDNN) {
          // The lines above ran the short-sequence kernel where it fits, in
          // its wgmma form on a Hopper GPU; its mma.sync form beside it.
          rt.set_attention_backward_wgmma(false);
          bench.time("attention bwd short, mma.sync form", 2 * attn_fl, true,
                     [&] { K::attention_backward(ctx, dqkv.t, dout.t, qkv.t, out.t, aux_t, NH, impl); });
          bench.time("attention bwd short, mma.sync form +db of qkv", 2 * attn_fl, true,
                     [&] { K::attention_backward(ctx, dqkv.t, dout.t, qkv.t, out.t, aux_t, NH, impl, dbq.t); });
          rt.set_attention_backward_wgmma(true);
          rt.set_attention_backward_short(false);
          bench.time("attention bwd cudnn (cuDNN's deterministic kernel)", 2 * attn_fl, true,
                     [&] { K::attention_backward(ctx, dqkv.t, dout.t, qkv.t, out.t, aux_t, NH, impl); });
          rt.set_sdpa_deterministic(false);
          bench.time("attention bwd cudnn (dQ fp32 atomics)", 2 * attn_fl, true,
                     [&] { K::attention_backward(ctx, dqkv.t, dout.t, qkv.t, out.t, aux_t, NH, impl); });
          rt.set_sdpa_deterministic(true);
          rt.set_attention_backward_short(true);
        }
      } catch (const std::exception& ex) {
        std::printf("attention %s: FAILED: %s\n", n.c_str(), ex.what());
      }
    }
    {
      Dev x(dt, {M, C}), w(dt, {C}), b(dt, {C}), y(dt, {M, C}), mean(DType::F32, {M}), rstd(DType::F32, {M});
      Dev dy(dt, {M, C}), dx(dt, {M, C}), dw(DType::F32, {C}), db(DType::F32, {C});
      K::layernorm_forward(ctx, y.t, mean.t, rstd.t, x.t, w.t, b.t, 1e-12f);
      bench.time("layernorm fwd", 2.0 * M * C * e, false,
                 [&] { K::layernorm_forward(ctx, y.t, mean.t, rstd.t, x.t, w.t, b.t, 1e-12f); });
      bench.time("layernorm bwd (dinp+=)", 4.0 * M * C * e, false,
                 [&] { K::layernorm_backward(ctx, dx.t, dw.t, db.t, dy.t, x.t, w.t, mean.t, rstd.t); });
      Dev cs(DType::F32, {C});  // the model's LayerNorm backwards also sum dinp's columns (a bias gradient)
      bench.time("layernorm bwd (dinp+=, dinp column sums)", 4.0 * M * C * e, false, [&] {
        K::layernorm_backward(ctx, dx.t, dw.t, db.t, dy.t, x.t, w.t, mean.t, rstd.t, true, cs.t, false);
      });
      bench.time("residual add", 3.0 * M * C * e, false, [&] { K::residual_add(ctx, y.t, x.t, dy.t); });
    }
    {
      Dev logits(dt, {B, 3}), losses(DType::F32, {B}), pred(DType::F32, {B}), dl(dt, {B, 3});
      Buffer labels(static_cast<size_t>(B) * 4, Device::CUDA);
      std::vector<int32_t> lab(static_cast<size_t>(B));
      for (int64_t i = 0; i < B; ++i) lab[i] = static_cast<int32_t>(i % 3);
      copy_bytes(labels.data(), Device::CUDA, lab.data(), Device::CPU, lab.size() * 4);
      Tensor lab_t(labels.data(), DType::F32, Device::CUDA, {B});
      bench.time("softmax cross-entropy (K=3)", (B * 3.0 * 2 * e), false,
                 [&] { K::softmax_cross_entropy(ctx, losses.t, pred.t, dl.t, logits.t, lab_t, 1.0f / B); });
    }
    const int64_t NPARAM = 85800963;  // ViT-B/16 with a 3-class head
    {
      Dev p(DType::F32, {NPARAM}, 0.02f), m(DType::F32, {NPARAM}, 0.001f), v(DType::F32, {NPARAM}, 1e-6f),
          g(DType::F32, {NPARAM}, 0.01f), lowp(dt, {NPARAM}), scale(DType::F32, {1}), skip(DType::F32, {1}),
          ss(DType::F32, {1});
      K::fill(ctx, scale.t, 1.0f);
      K::fill(ctx, skip.t, 0.0f);
      K::AdamWHyper hp;
      hp.weight_decay = 0.05f;
      bench.time("adamw (86M params, + lowp copy)", NPARAM * (16.0 + 12.0 + e), false,
                 [&] { K::adamw_update(ctx, p.t, m.t, v.t, g.t, lowp.t, hp, scale.t, skip.t); });
      bench.time("sum_squares (86M fp32 grads)", NPARAM * 4.0, false, [&] { K::sum_squares(ctx, ss.t, g.t); });
      bench.time("cast fp32 -> " + std::string(dtype_name(dt)) + " (86M)", NPARAM * (4.0 + e), false,
                 [&] { K::cast(ctx, lowp.t, p.t); });
    }

    // One training step, added up from the ops above.
    for (const char* path : {"cudnn", "cublas"}) {
      const std::string ps = path;
      const double fwd_layer = 2 * bench.ms("layernorm fwd") + bench.ms("matmul fwd qkv") +
                               bench.ms("attention fwd " + ps) + bench.ms("matmul fwd proj") +
                               2 * bench.ms("residual add") + bench.ms("matmul fwd fc1 +gelu(exact)") +
                               bench.ms("matmul fwd fc2");
      const double bwd_layer = bench.ms("matmul bwd fc2 (dinp+dW+db)") + bench.ms("gelu bwd +db of fc1") +
                               bench.ms("matmul bwd fc1 (dinp+dW)") + 2 * bench.ms("layernorm bwd (dinp+=)") +
                               bench.ms("matmul bwd proj (dinp+dW+db)") + bench.ms("attention bwd " + ps) +
                               bench.ms("matmul bwd qkv (dinp+dW+db)");
      const double once = bench.ms("matmul fwd patch-embed") + bench.ms("matmul bwd patch-embed (dW+db)") +
                          bench.ms("layernorm fwd") + bench.ms("layernorm bwd (dinp+=)") +
                          bench.ms("adamw (86M params, + lowp copy)") + bench.ms("sum_squares (86M fp32 grads)");
      const double step = L * (fwd_layer + bwd_layer) + once;
      std::printf("step estimate, %s attention: per block fwd %.3f ms + bwd %.3f ms; x12 + rest %.3f ms = %.2f ms"
                  " -> %.0f images/s (each op timed apart, %s, and summed)\n",
                  path, fwd_layer, bwd_layer, once, step, B / (step * 1e-3), eager ? "host launches" : "as graphs");
    }
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "bench_kernels: %s\n", ex.what());
    return 1;
  }
  return 0;
}
