#include "parallel/torch_ddp.h"

#include <algorithm>
#include <cmath>

#include "comm/communicator.h"
#include "comm/process_mesh.h"
#include "core/device.h"
#include "core/error.h"
#include "core/stream.h"
#include "kernels/adamw.h"
#include "kernels/cast.h"
#include "kernels/reduce.h"
#include "model/vit.h"

namespace vit::parallel {

namespace k = vit::kernels;

namespace {

// A contiguous range of the gradient buffer reduced as one collective.
struct Bucket {
  int64_t begin = 0, end = 0;
  int64_t pending_begin = 0;  // while backward runs: everything >= this is final
  bool launched = false;
};

class DataParallelPlugin final : public Plugin {
 public:
  DataParallelPlugin(const PluginOptions& opts, const model::ViTConfig& cfg, const model::ComputeConfig& compute,
                     int max_micro_batch, const PluginEnv& env)
      : opts_(opts),
        ctx_(env.ctx),
        dp_(env.mesh->dp_comm()),
        model_(cfg, compute, env.ctx, max_micro_batch),
        comm_stream_(env.ctx.device),
        backward_done_(env.ctx.device),
        comm_done_(env.ctx.device) {
    VIT_CHECK(env.mesh->tp_size() == 1 && env.mesh->pp_size() == 1, opts.name,
              " is data parallel only; tensor/pipeline layouts need hybrid_parallel");
    const Device dev = ctx_.device;
    const int64_t N = model_.layout().total();
    master_ = Buffer(N * 4, dev);
    grads_ = Buffer(N * 4, dev);
    m_ = Buffer(N * 4, dev);
    v_ = Buffer(N * 4, dev);
    m_.zero();
    v_.zero();
    if (compute.dtype != DType::F32) lowp_ = Buffer(N * dtype_size(compute.dtype), dev);
    const auto& c = cfg;
    image_bytes_ = static_cast<size_t>(c.image_size) * c.image_size * c.channels;
    images_ = Buffer(image_bytes_ * max_micro_batch, dev);
    labels_ = Buffer(static_cast<size_t>(max_micro_batch) * 4, dev);
    scalars_ = Buffer(4 * 4, dev);  // sumsq, clip*unscale factor, norm, nonfinite flag
    host_scalars_ = Buffer(4 * 4, Device::CPU, HostMemory::Pinned);
    model_.bind(compute_params(), tensor_of(grads_, DType::F32, {N}));
    build_buckets();
  }

  std::string name() const override { return opts_.name; }
  int data_parallel_size() const override { return dp_.size(); }
  int data_parallel_rank() const override { return dp_.rank(); }

  void load_params(const std::vector<float>& full) override {
    const int64_t N = model_.layout().total();
    VIT_CHECK(static_cast<int64_t>(full.size()) == N, "load_params: ", full.size(), " values for a model of ", N);
    copy_bytes(master_.data(), ctx_.device, full.data(), Device::CPU, N * 4);
    refresh_compute_copy();
  }

  std::vector<float> gather_params() override {
    std::vector<float> out(static_cast<size_t>(model_.layout().total()));
    synchronize_stream(ctx_.stream);
    copy_bytes(out.data(), Device::CPU, master_.data(), ctx_.device, out.size() * 4);
    return out;
  }

  std::vector<float> gather_grads() override {
    VIT_CHECK(last_loss_scale_ > 0.0f, "gather_grads: no train_step has run yet");
    // After train_step the buffer holds the all-reduced sum of every rank's
    // gradient, still multiplied by the loss scale (the optimizer applies
    // 1/loss_scale through its grad_scale; it never rescales the buffer).
    std::vector<float> out(static_cast<size_t>(model_.layout().total()));
    synchronize_stream(ctx_.stream);
    copy_bytes(out.data(), Device::CPU, grads_.data(), ctx_.device, out.size() * 4);
    const double inv = 1.0 / static_cast<double>(last_loss_scale_);
    for (float& g : out) g = static_cast<float>(g * inv);
    return out;
  }

  StepResult train_step(const std::vector<MicroBatch>& micro, int64_t global_count, float lr, float loss_scale,
                        int64_t adam_step) override {
    VIT_CHECK(!micro.empty() && global_count > 0, "train_step needs micro-batches and a positive global count");
    VIT_CHECK(loss_scale > 0.0f && std::isfinite(loss_scale), "train_step: loss_scale must be positive and finite, got ",
              loss_scale);
    last_loss_scale_ = loss_scale;
    const int64_t N = model_.layout().total();
    Tensor grads = tensor_of(grads_, DType::F32, {N});
    k::fill(ctx_, grads, 0.0f);
    for (Bucket& b : buckets_) {
      b.pending_begin = b.end;
      b.launched = false;
    }
    // The loss gradient is scaled by 1/global batch (a mean over every rank's
    // images) and by the fp16 loss scale.
    const float grad_scale = loss_scale / static_cast<float>(global_count);
    // Per-sample losses go to pinned host memory asynchronously and are
    // summed after the step's one synchronisation.
    size_t loss_slots = 0;
    for (const MicroBatch& mb : micro) loss_slots += static_cast<size_t>(mb.count);
    if (host_losses_.bytes() < loss_slots * 4) host_losses_ = Buffer(loss_slots * 4, Device::CPU, HostMemory::Pinned);
    size_t filled = 0;
    for (size_t i = 0; i < micro.size(); ++i) {
      const MicroBatch& mb = micro[i];
      const bool last = i + 1 == micro.size();
      if (mb.count == 0) continue;
      upload(mb);
      model::GradHook hook = nullptr;
      if (last) hook = [this](int64_t begin, int64_t) { on_grads_ready(begin); };
      model_.forward_backward(images_tensor(mb), labels_tensor(mb.count), mb.count, grad_scale, hook);
      copy_bytes_async(host_losses_.as<float>() + filled, model_.losses(mb.count).data,
                       static_cast<size_t>(mb.count) * 4, ctx_.stream);
      filled += static_cast<size_t>(mb.count);
    }
    // A rank without images in the last micro-batch still joins every reduction.
    for (Bucket& b : buckets_) {
      if (!b.launched) launch(b);
    }
    finish_reductions();

    // Global norm, clipping factor and (fp16) overflow check on the device.
    Tensor sumsq(scalars_.as<float>() + 0, DType::F32, ctx_.device, {1});
    Tensor scale(scalars_.as<float>() + 1, DType::F32, ctx_.device, {1});
    Tensor norm(scalars_.as<float>() + 2, DType::F32, ctx_.device, {1});
    Tensor flag(scalars_.as<float>() + 3, DType::F32, ctx_.device, {1});
    k::fill(ctx_, tensor_of(scalars_, DType::F32, {4}), 0.0f);
    k::sum_squares(ctx_, sumsq, grads);
    k::nonfinite_flag(ctx_, flag, grads);
    k::grad_scale_from_norm(ctx_, scale, norm, sumsq, opts_.grad_clip, 1.0f / loss_scale);
    k::AdamWHyper hp;
    hp.lr = lr;
    hp.beta1 = opts_.beta1;
    hp.beta2 = opts_.beta2;
    hp.eps = opts_.eps;
    hp.weight_decay = opts_.weight_decay;
    hp.step = adam_step;
    k::adamw_update(ctx_, tensor_of(master_, DType::F32, {N}), tensor_of(m_, DType::F32, {N}),
                    tensor_of(v_, DType::F32, {N}), grads, lowp_tensor(), hp, scale, flag);

    // One host synchronisation per step, after all its work is queued.
    copy_bytes_async(host_scalars_.data(), scalars_.data(), 16, ctx_.stream);
    synchronize_stream(ctx_.stream);
    const float* hs = host_scalars_.as<float>();
    double local_loss = 0.0;
    for (size_t i = 0; i < filled; ++i) local_loss += host_losses_.as<float>()[i];
    float loss_sum = static_cast<float>(local_loss);
    dp_.all_reduce(&loss_sum, 1, DType::F32, comm::ReduceOp::Sum, Device::CPU);
    StepResult r;
    r.loss = loss_sum / static_cast<double>(global_count);
    r.grad_norm = hs[2];
    r.skipped = hs[3] != 0.0f;
    return r;
  }

  EvalResult eval_batch(const MicroBatch& mb) override {
    EvalResult r;
    if (mb.count == 0) return r;
    upload(mb);
    model_.forward(images_tensor(mb), labels_tensor(mb.count), mb.count);
    r.loss_sum = sum_losses(mb.count);
    std::vector<int32_t> pred(static_cast<size_t>(mb.count));
    copy_bytes(pred.data(), Device::CPU, model_.predicted(mb.count).data, ctx_.device, pred.size() * 4);
    for (int i = 0; i < mb.count; ++i) r.correct += pred[static_cast<size_t>(i)] == mb.labels[i];
    r.count = mb.count;
    return r;
  }

  EvalResult all_reduce_eval(const EvalResult& local) override {
    // Counts stay exact in fp32 up to 2^24 samples per evaluation.
    float v[3] = {static_cast<float>(local.loss_sum), static_cast<float>(local.correct),
                  static_cast<float>(local.count)};
    dp_.all_reduce(v, 3, DType::F32, comm::ReduceOp::Sum, Device::CPU);
    return EvalResult{v[0], static_cast<int64_t>(v[1] + 0.5f), static_cast<int64_t>(v[2] + 0.5f)};
  }

 private:
  Tensor compute_params() {
    const int64_t N = model_.layout().total();
    return lowp_.empty() ? tensor_of(master_, DType::F32, {N}) : lowp_tensor();
  }
  Tensor lowp_tensor() {
    if (lowp_.empty()) return Tensor();
    return tensor_of(lowp_, model_.compute().dtype, {model_.layout().total()});
  }
  void refresh_compute_copy() {
    if (!lowp_.empty()) k::cast(ctx_, lowp_tensor(), tensor_of(master_, DType::F32, {model_.layout().total()}));
  }

  Tensor images_tensor(const MicroBatch& mb) const {
    const auto& c = model_.config();
    void* data = mb.on_device ? const_cast<uint8_t*>(mb.images) : images_.data();
    return Tensor(data, DType::U8, ctx_.device, {mb.count, c.image_size, c.image_size, c.channels});
  }
  Tensor labels_tensor(int B) const { return Tensor(labels_.data(), DType::I32, ctx_.device, {B}); }

  void upload(const MicroBatch& mb) {
    VIT_CHECK(mb.count <= model_.max_batch(), "micro-batch of ", mb.count, " exceeds ", model_.max_batch());
    if (!mb.on_device) copy_bytes_async(images_.data(), mb.images, image_bytes_ * mb.count, ctx_.stream);
    copy_bytes_async(labels_.data(), mb.labels, static_cast<size_t>(mb.count) * 4, ctx_.stream);
  }

  // Sum of the last forward's per-sample losses (evaluation: synchronises).
  double sum_losses(int B) {
    std::vector<float> losses(static_cast<size_t>(B));
    synchronize_stream(ctx_.stream);
    copy_bytes(losses.data(), Device::CPU, model_.losses(B).data, ctx_.device, losses.size() * 4);
    double s = 0.0;
    for (float l : losses) s += l;
    return s;
  }

  // Buckets of adjacent parameter ranges, filled from the end of the buffer
  // (where backward starts) towards its start.
  void build_buckets() {
    const model::ParamLayout& L = model_.layout();
    std::vector<std::pair<int64_t, int64_t>> ranges;  // in backward order
    ranges.push_back(L.head_range());
    for (int l = model_.config().depth - 1; l >= 0; --l) ranges.push_back(L.block_range(l));
    ranges.push_back(L.embed_range());
    const int64_t target = std::max<int64_t>(1, static_cast<int64_t>(opts_.bucket_bytes / 4));
    Bucket cur;
    cur.end = ranges.front().second;
    cur.begin = cur.end;
    for (const auto& r : ranges) {
      cur.begin = r.first;
      if (cur.end - cur.begin >= target) {
        buckets_.push_back(cur);
        cur = Bucket();
        cur.end = r.first;
        cur.begin = r.first;
      }
    }
    if (cur.end > cur.begin) buckets_.push_back(cur);
  }

  // Ranges arrive in backward order and each bucket is a union of whole
  // ranges, so a bucket is complete when its lowest range has arrived.
  void on_grads_ready(int64_t begin) {
    for (Bucket& b : buckets_) {
      if (b.launched || begin < b.begin || begin >= b.end) continue;
      b.pending_begin = std::min(b.pending_begin, begin);
      if (opts_.overlap_comm && b.pending_begin == b.begin) launch(b);
    }
  }

  void launch(Bucket& b) {
    b.launched = true;
    if (dp_.size() == 1) return;
    backward_done_.record(ctx_.stream);
    comm_stream_.wait(backward_done_);
    float* p = grads_.as<float>() + b.begin;
    dp_.all_reduce(p, static_cast<size_t>(b.end - b.begin), DType::F32, comm::ReduceOp::Sum,
                   ctx_.device, comm_stream_.handle());
  }

  // The compute stream waits for every bucket's reduction.
  void finish_reductions() {
    if (dp_.size() == 1) return;
    comm_done_.record(comm_stream_.handle());
    stream_wait_event(ctx_.stream, comm_done_);
  }

  PluginOptions opts_;
  Context ctx_;
  comm::Communicator& dp_;
  model::ViTModel model_;
  Buffer master_, lowp_, grads_, m_, v_;
  Buffer images_, labels_, scalars_, host_scalars_;
  size_t image_bytes_ = 0;
  std::vector<Bucket> buckets_;
  Buffer host_losses_;  // pinned: per-sample losses of the current step
  float last_loss_scale_ = 0.0f;  // of the last train_step (gather_grads unscales with it); 0 before the first
  Stream comm_stream_;
  Event backward_done_, comm_done_;
};

}  // namespace

std::unique_ptr<Plugin> make_data_parallel(const PluginOptions& opts, const model::ViTConfig& cfg,
                                           const model::ComputeConfig& compute, int max_micro_batch,
                                           const PluginEnv& env) {
  return std::make_unique<DataParallelPlugin>(opts, cfg, compute, max_micro_batch, env);
}

}  // namespace vit::parallel
