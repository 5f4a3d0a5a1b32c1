// The model split over tensor-parallel ranks (Megatron 1-D) against the
// whole model, on the CPU: each rank is a thread holding its ParamLayout
// slice, the four reductions of a block go through a shared-memory
// all-reduce between the threads (what NCCL or MPI does between processes in
// the product). Logits, losses and every gradient slice must match the
// unsharded model's; gradients of replicated parameters must be identical
// (bitwise) on every rank.
#define BOOST_TEST_MODULE model_tp
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "core/rng.h"
#include "kernels/cpu_threads.h"
#include "model/params.h"
#include "model/vit.h"

using namespace vit;

namespace {

// Sums fp32 tensors over `n` threads; every thread gets the sum computed in
// the same order (rank 0 + rank 1 + ...), so replicated values stay
// bit-identical across ranks.
class ThreadAllReduce {
 public:
  explicit ThreadAllReduce(int n) : n_(n), slots_(static_cast<size_t>(n)) {}
  void all_reduce(int rank, Tensor x) {
    const float* p = x.f32();
    slots_[static_cast<size_t>(rank)].assign(p, p + x.numel());
    barrier();
    for (int64_t i = 0; i < x.numel(); ++i) {
      float s = 0.0f;
      for (int r = 0; r < n_; ++r) s += slots_[static_cast<size_t>(r)][static_cast<size_t>(i)];
      x.f32()[i] = s;
    }
    barrier();  // nobody overwrites a slot before everyone has read it
  }

 private:
  void barrier() {
    std::unique_lock<std::mutex> lock(mu_);
    const int gen = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return generation_ != gen; });
    }
  }
  int n_;
  std::vector<std::vector<float>> slots_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0, generation_ = 0;
};

struct RankComm : model::TensorParallelComm {
  ThreadAllReduce* shared;
  int rank;
  RankComm(ThreadAllReduce* s, int r) : shared(s), rank(r) {}
  void all_reduce(Tensor x) override { shared->all_reduce(rank, x); }
};

model::ViTConfig small_vit() {
  model::ViTConfig c;
  c.image_size = 16;
  c.patch_size = 4;  // 17 tokens
  c.hidden = 24;
  c.depth = 2;
  c.heads = 6;
  c.mlp_dim = 36;
  c.num_classes = 4;
  c.layernorm_eps = 1e-6f;
  return c;
}

struct Result {
  std::vector<float> logits, losses, grads;
};

Result run(const model::ViTConfig& cfg, const model::ShardSpec& shard, const std::vector<float>& full_params,
           const std::vector<uint8_t>& images, std::vector<int32_t> labels, int B, model::TensorParallelComm* tp) {
  model::ViTModel m(cfg, model::ComputeConfig{}, Context{}, B, shard);
  std::vector<float> params(static_cast<size_t>(m.layout().total()));
  m.layout().extract_local(full_params.data(), params.data());
  Result r;
  r.grads.assign(params.size(), 0.0f);
  m.bind(Tensor(params.data(), DType::F32, Device::CPU, {m.layout().total()}),
         Tensor(r.grads.data(), DType::F32, Device::CPU, {m.layout().total()}));
  m.set_tensor_parallel(tp);
  std::vector<uint8_t> imgs = images;
  m.forward_backward(Tensor(imgs.data(), DType::U8, Device::CPU, {B, cfg.image_size, cfg.image_size, 3}),
                     Tensor(labels.data(), DType::I32, Device::CPU, {B}), B, 1.0f / B);
  const float* l = m.logits(B).as<float>();
  r.logits.assign(l, l + B * cfg.num_classes);
  const float* s = m.losses(B).as<float>();
  r.losses.assign(s, s + B);
  return r;
}

double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - b[i]));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return den > 0 ? num / den : num;
}

}  // namespace

BOOST_AUTO_TEST_CASE(tensor_parallel_ranks_compute_the_whole_model) {
  kernels::set_cpu_threads(1);
  const model::ViTConfig cfg = small_vit();
  const model::ParamLayout full(cfg);
  std::vector<float> params(static_cast<size_t>(full.total()));
  model::init_params(full, 0.2f, 3, params.data());
  Rng rng(17);
  for (auto& p : params) p += static_cast<float>(0.05 * rng.normal());  // biases and LN weights off 0 and 1
  const int B = 3;
  std::vector<uint8_t> images(static_cast<size_t>(B) * cfg.image_size * cfg.image_size * 3);
  for (auto& p : images) p = static_cast<uint8_t>(rng.below(256));
  const std::vector<int32_t> labels = {0, 3, 2};
  const Result whole = run(cfg, model::ShardSpec(), params, images, labels, B, nullptr);

  for (int tp : {2, 3}) {
    ThreadAllReduce shared(tp);
    std::vector<Result> ranks(static_cast<size_t>(tp));
    std::vector<std::unique_ptr<RankComm>> comms;
    for (int r = 0; r < tp; ++r) comms.push_back(std::make_unique<RankComm>(&shared, r));
    std::vector<std::thread> threads;
    for (int r = 0; r < tp; ++r) {
      threads.emplace_back([&, r] {
        model::ShardSpec s;
        s.tp_size = tp;
        s.tp_rank = r;
        ranks[static_cast<size_t>(r)] = run(cfg, s, params, images, labels, B, comms[static_cast<size_t>(r)].get());
      });
    }
    for (auto& t : threads) t.join();
    // fp32 sums of partial products in another order: ~1e-6 relative; a
    // missing reduction, a bias counted tp times or a wrong slice is O(1).
    const double tol = 1e-5;
    for (int r = 0; r < tp; ++r) {
      const Result& got = ranks[static_cast<size_t>(r)];
      BOOST_TEST(max_rel(got.logits, whole.logits) < tol, "tp " << tp << " rank " << r << " logits");
      BOOST_TEST(max_rel(got.losses, whole.losses) < tol, "tp " << tp << " rank " << r << " losses");
      model::ShardSpec s;
      s.tp_size = tp;
      s.tp_rank = r;
      const model::ParamLayout mine(cfg, s);
      std::vector<float> want(static_cast<size_t>(mine.total()));
      mine.extract_local(whole.grads.data(), want.data());
      for (const auto& p : mine.params()) {
        const std::vector<float> g(got.grads.begin() + p.offset, got.grads.begin() + p.offset + p.numel);
        const std::vector<float> w(want.begin() + p.offset, want.begin() + p.offset + p.numel);
        BOOST_TEST(max_rel(g, w) < tol, "tp " << tp << " rank " << r << " gradient of " << p.name << " ("
                                                << model::tp_split_name(p.split) << ")");
        if (p.split == model::TpSplit::Replicated && r > 0) {
          const Result& first = ranks[0];
          const std::vector<float> g0(first.grads.begin() + p.offset, first.grads.begin() + p.offset + p.numel);
          BOOST_TEST(g == g0, "replicated " << p.name << " differs between tp ranks 0 and " << r);
        }
      }
    }
  }
}
