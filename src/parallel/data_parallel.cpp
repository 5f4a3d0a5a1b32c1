#include "parallel/data_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>

#include "comm/communicator.h"
#include "comm/process_mesh.h"
#include "core/device.h"
#include "core/error.h"
#include "core/graph.h"
#include "core/stream.h"
#include "kernels/cast.h"
#include "kernels/profile.h"
#include "model/vit.h"
#include "parallel/batch_stager.h"
#include "parallel/bucket_layout.h"
#include "parallel/grad_buckets.h"
#include "parallel/param_groups.h"
#include "parallel/step_finisher.h"
#include "parallel/step_gap.h"

namespace vit::parallel {

namespace k = vit::kernels;

namespace {

class DataParallelPlugin final : public Plugin, private model::ParamSource {
 public:
  DataParallelPlugin(const PluginOptions& opts, const model::ViTConfig& cfg, const model::ComputeConfig& compute,
                     int max_micro_batch, const PluginEnv& env)
      : opts_(opts),
        ctx_(env.ctx),
        dp_(env.mesh->dp_comm()),
        sharded_(opts.name == "low_level_zero"),
        model_(cfg, compute, env.ctx, max_micro_batch),
        buckets_(model_.layout(), opts.bucket_bytes, dp_.size(), dp_.rank()),
        grads_(buckets_, dp_, env.ctx,
               sharded_ && opts.zero.stage == 2 ? GradReduction::ReduceScatter : GradReduction::AllReduce,
               opts.overlap_comm, 3, opts.reduce_dtype),
        stager_(cfg, env.ctx, max_micro_batch),
        finisher_(env.ctx, opts.optimizer(), sharded_ ? &dp_ : nullptr) {
    VIT_CHECK(env.mesh->tp_size() == 1 && env.mesh->pp_size() == 1, opts.name,
              " is data parallel only; tensor/pipeline layouts need hybrid_parallel");
    VIT_CHECK(!sharded_ || opts.zero.stage == 1 || opts.zero.stage == 2, "low_level_zero: stage ", opts.zero.stage,
              " (allowed: 1, 2)");
    VIT_CHECK(model_.layout().shard().is_full(), opts.name, " holds whole tensors (checkpoint runs assume it)");
    const Device dev = ctx_.device;
    const DType cd = model_.compute().dtype;
    const int64_t P = buckets_.padded_total();
    const int64_t S = sharded_ ? buckets_.shard_total() : P;
    params_ = Buffer(static_cast<size_t>(P) * dtype_size(cd), dev);
    // Replicated fp32: the parameters the model reads are the master weights.
    if (sharded_ || cd != DType::F32) master_ = Buffer(static_cast<size_t>(S) * 4, dev);
    m_ = Buffer(static_cast<size_t>(S) * 4, dev);
    v_ = Buffer(static_cast<size_t>(S) * 4, dev);
    m_.zero();
    v_.zero();
    params_.zero();
    if (!master_.empty()) master_.zero();
    const auto& ps = model_.layout().params();
    for (const auto& p : ps) padded_offset_.push_back(buckets_.padded_offset(p.offset));
    if (sharded_) gather_ = std::make_unique<ParamGather>(buckets_, dp_, ctx_, params_tensor());
    build_views();
    model_.set_param_source(this);
    // CUDA graphs of forward + backward: one GPU, whole buffers, and nothing
    // that changes per step inside the model (masks; mixup targets are
    // checked per micro-batch). With more ranks the bucket hooks launch
    // collectives from inside backward, which this does not capture.
    graphs_on_ = opts.cuda_graph && ctx_.on_gpu() && dp_.size() == 1 && !sharded_ &&
                 !model_.compute().reg.any_noise();
  }

  std::string name() const override { return opts_.name; }
  std::vector<std::string> notes() const override {
    std::vector<std::string> out;
    if (!model_.attention_note().empty()) out.push_back(str_cat("attention: ", model_.attention_note()));
    if (sharded_) {
      out.push_back(str_cat(opts_.name, " stage ", opts_.zero.stage, ": this rank keeps ",
                            buckets_.shard_total(), " of ", buckets_.padded_total(),
                            " optimizer-state elements (1/", dp_.size(), ")",
                            opts_.zero.stage == 2 ? ", and gradients reduce-scattered into a shard of that size" : ""));
    }
    return out;
  }
  std::string variant() const override { return sharded_ ? str_cat("stage ", opts_.zero.stage) : std::string(); }
  std::string run_summary() const override {
    std::string out;
    if (graphs_on_) {
      out = str_cat("CUDA graphs: ", graphs_.captures(), " captured, ", graphs_.replays(), " replays, ",
                    graphs_.eager_runs(), " micro-batches eager", graphs_.off() ? " (" + graphs_.note() + ")" : "");
    }
    if (const std::string gap = gap_.summary(); !gap.empty()) out += (out.empty() ? "" : "\n") + gap;
    return out;
  }
  int data_parallel_size() const override { return dp_.size(); }
  int data_parallel_rank() const override { return dp_.rank(); }

  size_t optimizer_state_bytes() const override {
    const size_t moments = m_.bytes() + v_.bytes();
    return moments + (master_.empty() ? params_.bytes() : master_.bytes());
  }

  void swap_ema() override {
    settle();
    finisher_.swap_ema(views_);
    // ZeRO: this rank swapped its parts; the others' come by the all-gather.
    if (gather_) gather_->launch();
    settle();
  }

  void load_params(const std::vector<float>& full) override {
    const int64_t N = model_.layout().total(), P = buckets_.padded_total();
    VIT_CHECK(static_cast<int64_t>(full.size()) == N, "load_params: ", full.size(), " values for a model of ", N);
    settle();
    std::vector<float> padded(static_cast<size_t>(P));
    buckets_.pad(full.data(), padded.data());
    const DType cd = model_.compute().dtype;
    Buffer staged(static_cast<size_t>(P) * 4, ctx_.device);
    copy_bytes(staged.data(), ctx_.device, padded.data(), Device::CPU, staged.bytes());
    Tensor all = tensor_of(staged, DType::F32, {P});
    k::cast(ctx_, params_tensor(), all);  // fp32 -> compute dtype (a copy for fp32)
    if (!master_.empty()) {
      if (!sharded_) {
        k::cast(ctx_, tensor_of(master_, DType::F32, {P}), all);
      } else {
        for (size_t b = 0; b < buckets_.buckets().size(); ++b) {
          const int64_t part = buckets_.part_size(static_cast<int>(b));
          k::cast(ctx_, Tensor(master_.as<float>() + buckets_.buckets()[b].shard_offset, DType::F32, ctx_.device, {part}),
                  Tensor(staged.as<float>() + buckets_.part_begin(static_cast<int>(b)), DType::F32, ctx_.device, {part}));
        }
      }
    }
    (void)cd;
    finisher_.reset_ema();  // the average starts again from these weights
    k::fill(ctx_, tensor_of(m_, DType::F32, {static_cast<int64_t>(m_.bytes() / 4)}), 0.0f);
    k::fill(ctx_, tensor_of(v_, DType::F32, {static_cast<int64_t>(v_.bytes() / 4)}), 0.0f);
    synchronize_stream(ctx_.stream);  // `staged` is freed on return
  }

  std::vector<float> gather_params() override {
    settle();
    const int64_t P = buckets_.padded_total();
    std::vector<float> padded(static_cast<size_t>(P));
    if (!sharded_) {
      const Buffer& master = master_.empty() ? params_ : master_;
      copy_bytes(padded.data(), Device::CPU, master.data(), ctx_.device, static_cast<size_t>(P) * 4);
    } else {
      gather_shards(master_.as<float>(), padded.data());
    }
    std::vector<float> out(static_cast<size_t>(model_.layout().total()));
    buckets_.unpad(padded.data(), out.data());
    return out;
  }

  std::vector<float> gather_grads() override {
    VIT_CHECK(last_loss_scale_ > 0.0f, "gather_grads: no train_step has run yet");
    settle();
    const int64_t P = buckets_.padded_total();
    std::vector<float> padded(static_cast<size_t>(P));
    if (grads_.reduction() == GradReduction::AllReduce) {
      copy_bytes(padded.data(), Device::CPU, grads_.reduced().data, ctx_.device, static_cast<size_t>(P) * 4);
    } else {
      gather_shards(grads_.reduced().f32(), padded.data());
    }
    std::vector<float> out(static_cast<size_t>(model_.layout().total()));
    buckets_.unpad(padded.data(), out.data());
    // The buffers hold the loss-scaled sums (AdamW undoes the scale through
    // its grad_scale and never rescales them); divide in double, round once.
    const double inv = 1.0 / static_cast<double>(last_loss_scale_);
    for (float& g : out) g = static_cast<float>(g * inv);
    return out;
  }

  // Checkpoints. Ownership follows the padded bucket layout: rank r writes
  // the real elements of part r of every bucket (its ZeRO shard; a
  // replicated plugin holds everything but writes the same share), and
  // reads on import what it holds: its parts (sharded) or everything.
  std::vector<TensorRun> state_runs() const override {
    std::vector<TensorRun> runs;
    for_each_owned_part([&](int, int64_t lo, int64_t hi) { append_runs(lo, hi, runs); });
    return runs;
  }

  std::vector<StatePart> state_parts() const override {
    return state_parts_with(finisher_.has_ema());
  }

  std::vector<float> export_state(StatePart part) override {
    settle();
    // The average lives per view in the StepFinisher: laid out first as the
    // master weights are, on the host, then read as they are.
    std::vector<float> ema;
    if (part == StatePart::Ema) {
      VIT_CHECK(finisher_.has_ema(), opts_.name, ": export_state(ema) without a weight average (ema_decay is 0)");
      ema = finisher_.export_ema_to_host(views_, state_buffer(StatePart::Master),
                                         static_cast<int64_t>(master_bytes() / sizeof(float)));
    }
    const float* base = part == StatePart::Ema ? ema.data() : state_buffer(part);
    const Device where = part == StatePart::Ema ? Device::CPU : ctx_.device;
    std::vector<float> out;
    for_each_owned_part([&](int b, int64_t lo, int64_t hi) {
      // The part's real elements sit at its start: in the shard buffer
      // (sharded) or at part_begin in the padded whole (replicated).
      const int64_t at = sharded_ ? buckets_.buckets()[static_cast<size_t>(b)].shard_offset : buckets_.part_begin(b);
      const size_t n = static_cast<size_t>(hi - lo);
      out.resize(out.size() + n);
      copy_bytes(out.data() + out.size() - n, Device::CPU, base + at, where, n * sizeof(float));
    });
    return out;
  }

  void import_state(const StateReader& read, bool has_ema) override {
    settle();
    const int64_t P = buckets_.padded_total();
    const int64_t n = sharded_ ? buckets_.shard_total() : P;
    std::vector<float> host(static_cast<size_t>(n));
    const bool ema = finisher_.has_ema() && has_ema;  // a checkpoint's average without ema_decay is not read
    const std::vector<StatePart> parts = state_parts_with(ema);
    for (StatePart part : parts) {
      std::fill(host.begin(), host.end(), 0.0f);  // padding stays zero, as AdamW keeps it
      for (size_t b = 0; b < buckets_.buckets().size(); ++b) {
        const Bucket& bk = buckets_.buckets()[b];
        // Local elements [lo, hi) this rank holds, and where lo goes in `host`.
        int64_t lo = bk.begin, hi = bk.end, at = bk.padded_begin;
        if (sharded_) {
          const auto [plo, phi] = owned_range(static_cast<int>(b), dp_.rank());
          lo = plo;
          hi = phi;
          at = bk.shard_offset;
        }
        std::vector<TensorRun> runs;
        append_runs(lo, hi, runs);
        int64_t pos = at;
        for (const TensorRun& r : runs) {
          read(part, r, host.data() + pos);
          pos += r.count;
        }
      }
      if (part == StatePart::Ema) {  // same layout as the master weights; the StepFinisher takes it per view
        finisher_.import_ema_from_host(views_, state_buffer(StatePart::Master), host);
        continue;
      }
      float* dst = const_cast<float*>(state_buffer(part));
      copy_bytes(dst, ctx_.device, host.data(), Device::CPU, host.size() * sizeof(float));
    }
    // No average in the checkpoint (an older one, or written with ema_decay
    // 0): it starts afresh from the imported weights at the next step.
    if (!ema) finisher_.reset_ema();
    // The compute-dtype copy the model reads, from the master weights: whole
    // (replicated; the same buffer for fp32) or this rank's parts, then
    // all-gathered as after a step (sharded).
    if (!sharded_) {
      if (!master_.empty()) k::cast(ctx_, params_tensor(), tensor_of(master_, DType::F32, {P}));
    } else {
      const DType cd = model_.compute().dtype;
      for (size_t b = 0; b < buckets_.buckets().size(); ++b) {
        const int64_t part = buckets_.part_size(static_cast<int>(b));
        k::cast(ctx_,
                Tensor(static_cast<char*>(params_.data()) +
                           buckets_.part_begin(static_cast<int>(b)) * static_cast<int64_t>(dtype_size(cd)),
                       cd, ctx_.device, {part}),
                Tensor(master_.as<float>() + buckets_.buckets()[b].shard_offset, DType::F32, ctx_.device, {part}));
      }
      gather_->launch();
      gather_->wait_all();
    }
    synchronize_stream(ctx_.stream);
  }

  StepResult train_step(const std::vector<MicroBatch>& micro, int64_t global_count, float lr, float loss_scale,
                        int64_t adam_step) override {
    VIT_CHECK(!micro.empty() && global_count > 0, "train_step needs micro-batches and a positive global count");
    VIT_CHECK(loss_scale > 0.0f && std::isfinite(loss_scale), "train_step: loss_scale must be positive and finite, got ",
              loss_scale);
    // The first micro-batch's backward assigns the gradients (no zero fill
    // and no read of the old values) when it has images and the gradients
    // live in one whole buffer; otherwise they are zeroed and every
    // micro-batch adds.
    const bool assign_first = grads_.reduction() == GradReduction::AllReduce && micro.front().count > 0;
    gap_.step_begin(ctx_.stream);
    grads_.begin_step(!assign_first);
    // The loss gradient is scaled by 1/global batch (a mean over every rank's
    // images) and by the fp16 loss scale: the reductions sum.
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
      if (mb.count == 0) {
        grads_.skip_micro(last);  // still joins every reduction
        continue;
      }
      Tensor images, labels;
      stager_.stage(mb, &images, &labels);
      model_.set_train_extras(stager_.extras());  // mixup/cutmix targets, the masks' noise key
      model_.set_assign_grads(assign_first && i == 0);
      grads_.begin_micro(last);
      if (graphs_on_ && !stager_.extras().labels_b.defined() && !k::OpProfiler::instance().enabled()) {
        // Everything the launches take beyond this plugin's own buffers: the
        // batch buffers, its size, the loss-gradient scale and whether the
        // gradients are assigned or added.
        uint32_t scale_bits = 0;
        std::memcpy(&scale_bits, &grad_scale, sizeof scale_bits);
        graphs_.run({reinterpret_cast<uintptr_t>(images.data), reinterpret_cast<uintptr_t>(labels.data),
                     static_cast<uint64_t>(mb.count), scale_bits, model_.assign_grads() ? 1u : 0u},
                    ctx_.stream, [&] { model_.forward_backward(images, labels, mb.count, grad_scale); },
                    [&] { grads_.begin_micro(last); });
        if (graphs_.off() && !graph_note_printed_) {
          std::fprintf(stderr, "vit_hpc: warning: %s\n", graphs_.note().c_str());
          graph_note_printed_ = true;
        }
      } else {
        model_.forward_backward(images, labels, mb.count, grad_scale);
      }
      copy_bytes_async(host_losses_.as<float>() + filled, model_.losses(mb.count).data,
                       static_cast<size_t>(mb.count) * 4, ctx_.stream);
      filled += static_cast<size_t>(mb.count);
    }
    model_.set_assign_grads(false);
    grads_.finish();
    finisher_.finish(views_, lr, loss_scale, adam_step);
    if (gather_) {
      gather_->launch();
      if (!opts_.overlap_comm) gather_->wait_all();
    }
    // One host synchronisation per step, after all its work is queued.
    finisher_.read_back();
    gap_.step_end(ctx_.stream);
    synchronize_stream(ctx_.stream);
    gap_.collect();
    last_loss_scale_ = loss_scale;
    double local_loss = 0.0;
    for (size_t i = 0; i < filled; ++i) local_loss += host_losses_.as<float>()[i];
    float loss_sum = static_cast<float>(local_loss);
    dp_.all_reduce(&loss_sum, 1, DType::F32, comm::ReduceOp::Sum, Device::CPU);
    StepResult r;
    r.loss = loss_sum / static_cast<double>(global_count);
    r.grad_norm = finisher_.grad_norm();
    r.skipped = finisher_.skipped();
    return r;
  }

  EvalResult eval_batch(const MicroBatch& mb) override {
    EvalResult r;
    if (mb.count == 0) return r;
    Tensor images, labels;
    stager_.stage(mb, &images, &labels);
    model_.forward(images, labels, mb.count);
    std::vector<float> losses(static_cast<size_t>(mb.count));
    std::vector<int32_t> pred(static_cast<size_t>(mb.count));
    synchronize_stream(ctx_.stream);
    copy_bytes(losses.data(), Device::CPU, model_.losses(mb.count).data, ctx_.device, losses.size() * 4);
    copy_bytes(pred.data(), Device::CPU, model_.predicted(mb.count).data, ctx_.device, pred.size() * 4);
    for (float l : losses) r.loss_sum += l;
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
  // model::ParamSource: views into the padded buffers; bucket bookkeeping.
  Tensor param(int index) override {
    const model::ParamInfo& p = model_.layout()[index];
    const DType cd = model_.compute().dtype;
    char* base = static_cast<char*>(params_.data()) +
                 padded_offset_[static_cast<size_t>(index)] * static_cast<int64_t>(dtype_size(cd));
    return model::param_view(base, cd, ctx_.device, p);
  }
  Tensor grad(int index) override { return grads_.grad_view(index); }
  void before_forward(const model::Segment& s) override {
    if (gather_) gather_->wait_for(s);
  }
  void before_backward(const model::Segment& s) override { grads_.segment_started(s); }
  void after_backward(const model::Segment& s) override { grads_.segment_done(s); }

  Tensor params_tensor() const {
    return tensor_of(params_, model_.compute().dtype, {buckets_.padded_total()});
  }

  // The parts this rank updates (StepFinisher): everything when replicated,
  // its part of every bucket when sharded; split at parameter boundaries
  // when parameters differ in lr or weight decay (param_groups.h).
  void build_views() {
    std::vector<int64_t> begins;  // where each view starts in the padded buffers
    collect_views(&begins);
    if (!opts_.groups.active()) return;
    views_ = split_views_by_param(views_, begins, model_.layout(), padded_offset_, opts_.groups);
  }

  void collect_views(std::vector<int64_t>* begins) {
    const DType cd = model_.compute().dtype;
    const Device dev = ctx_.device;
    if (!sharded_) {
      const int64_t P = buckets_.padded_total();
      ShardView v;
      v.master = tensor_of(master_.empty() ? params_ : master_, DType::F32, {P});
      v.m = tensor_of(m_, DType::F32, {P});
      v.v = tensor_of(v_, DType::F32, {P});
      v.grad = grads_.reduced();
      if (!master_.empty()) v.lowp = params_tensor();
      views_.push_back(v);
      begins->push_back(0);
      return;
    }
    for (size_t b = 0; b < buckets_.buckets().size(); ++b) {
      const int64_t part = buckets_.part_size(static_cast<int>(b));
      const int64_t off = buckets_.buckets()[b].shard_offset;
      ShardView v;
      v.master = Tensor(master_.as<float>() + off, DType::F32, dev, {part});
      v.m = Tensor(m_.as<float>() + off, DType::F32, dev, {part});
      v.v = Tensor(v_.as<float>() + off, DType::F32, dev, {part});
      v.grad = grads_.reduced_part(static_cast<int>(b));
      v.lowp = Tensor(static_cast<char*>(params_.data()) +
                          buckets_.part_begin(static_cast<int>(b)) * static_cast<int64_t>(dtype_size(cd)),
                      cd, dev, {part});
      views_.push_back(v);
      begins->push_back(buckets_.part_begin(static_cast<int>(b)));
    }
  }

  // Local elements [lo, hi) of bucket b's part `rank` that are real (not padding).
  std::pair<int64_t, int64_t> owned_range(int b, int rank) const {
    const Bucket& bk = buckets_.buckets()[static_cast<size_t>(b)];
    const int64_t ps = buckets_.part_size(b), real = bk.end - bk.begin;
    return {bk.begin + std::min(real, rank * ps), bk.begin + std::min(real, (rank + 1) * ps)};
  }

  // f(bucket, lo, hi) for this rank's part of every bucket, in buffer order.
  template <typename F>
  void for_each_owned_part(F&& f) const {
    for (int b = static_cast<int>(buckets_.buckets().size()) - 1; b >= 0; --b) {
      const auto [lo, hi] = owned_range(b, dp_.rank());
      if (hi > lo) f(b, lo, hi);
    }
  }

  // The parameters' runs covering local elements [lo, hi) (the layout is
  // unsharded: data parallel only).
  void append_runs(int64_t lo, int64_t hi, std::vector<TensorRun>& out) const {
    append_param_runs(model_.layout(), lo, hi, out);
  }

  // The fp32 buffer holding `part`: padded whole (replicated) or this rank's
  // shard (sharded); replicated fp32 keeps its master weights in params_.
  // The average has no such buffer (the StepFinisher keeps it per view).
  const float* state_buffer(StatePart part) const {
    switch (part) {
      case StatePart::Master: return (master_.empty() ? params_ : master_).as<float>();
      case StatePart::AdamM: return m_.as<float>();
      case StatePart::AdamV: return v_.as<float>();
      case StatePart::Ema: break;
    }
    VIT_THROW("state_buffer: no buffer for state part ", state_part_name(part));
  }
  // Bytes of the fp32 master weights (padded whole, or this rank's shard).
  size_t master_bytes() const { return m_.bytes(); }

  // Every queued gather and update has landed (before host reads or writes).
  void settle() {
    if (gather_) gather_->wait_all();
    synchronize_stream(ctx_.stream);
  }

  // Shards (shard_total fp32 on the device, this rank's parts) -> the whole
  // padded vector on the host, by an all-gather per bucket. Collective.
  void gather_shards(const float* shard, float* padded_host) {
    const int64_t P = buckets_.padded_total();
    Buffer whole(static_cast<size_t>(P) * 4, ctx_.device);
    for (size_t b = 0; b < buckets_.buckets().size(); ++b) {
      const int64_t part = buckets_.part_size(static_cast<int>(b));
      dp_.all_gather(shard + buckets_.buckets()[b].shard_offset, whole.as<float>() + buckets_.buckets()[b].padded_begin,
                     static_cast<size_t>(part), DType::F32, ctx_.device, ctx_.stream);
    }
    synchronize_stream(ctx_.stream);
    copy_bytes(padded_host, Device::CPU, whole.data(), ctx_.device, whole.bytes());
  }

  PluginOptions opts_;
  Context ctx_;
  comm::Communicator& dp_;
  bool sharded_;
  model::ViTModel model_;
  BucketLayout buckets_;
  GradBuckets grads_;
  BatchStager stager_;
  StepFinisher finisher_;
  std::unique_ptr<ParamGather> gather_;
  std::vector<int64_t> padded_offset_;
  std::vector<ShardView> views_;
  // params_: compute dtype, padded, whole model (what forward reads).
  // master_: fp32 master weights (padded whole, or this rank's shard); empty
  // for replicated fp32, where params_ is the master.
  Buffer params_, master_, m_, v_;
  Buffer host_losses_;  // pinned: per-sample losses of the current step
  float last_loss_scale_ = 0.0f;  // of the last train_step; 0 before the first
  bool graphs_on_ = false;        // CUDA graphs apply to this run (see the constructor)
  bool graph_note_printed_ = false;
  GraphCache graphs_;              // forward + backward per batch buffer, size and scale
  StepGapMeter gap_{ctx_.device};  // the GPU's wait for the host between steps
};

}  // namespace

std::unique_ptr<Plugin> make_data_parallel(const PluginOptions& opts, const model::ViTConfig& cfg,
                                           const model::ComputeConfig& compute, int max_micro_batch,
                                           const PluginEnv& env) {
  return std::make_unique<DataParallelPlugin>(opts, cfg, compute, max_micro_batch, env);
}

}  // namespace vit::parallel
