#include "parallel/gemini.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "comm/communicator.h"
#include "comm/process_mesh.h"
#include "core/device.h"
#include "core/error.h"
#include "core/stream.h"
#include "kernels/adamw.h"
#include "kernels/cast.h"
#include "kernels/cpu_threads.h"
#include "kernels/ema.h"
#include "kernels/reduce.h"
#include "kernels/residual.h"
#include "model/vit.h"
#include "parallel/batch_stager.h"
#include "parallel/bucket_layout.h"
#include "parallel/chunk_pool.h"
#include "parallel/chunk_timeline.h"
#include "parallel/ordered_worker.h"
#include "parallel/param_groups.h"
#include "parallel/step_finisher.h"

namespace vit::parallel {

namespace k = vit::kernels;

std::vector<std::vector<model::Segment>> gemini_chunk_groups(const model::ParamLayout& layout, int64_t max_elems) {
  VIT_CHECK(max_elems >= 1, "gemini: the chunk size must be positive");
  std::vector<model::Segment> backward = layout.segments();
  std::reverse(backward.begin(), backward.end());
  std::vector<std::vector<model::Segment>> groups;
  int64_t in_chunk = 0;
  for (const model::Segment& s : backward) {
    const auto [b, e] = layout.range(s);
    if (!groups.empty() && in_chunk > 0 && in_chunk + (e - b) <= max_elems) {
      groups.back().push_back(s);
      in_chunk += e - b;
    } else {
      groups.push_back({s});
      in_chunk = e - b;
    }
  }
  return groups;
}

int gemini_offload_count(const std::vector<int64_t>& chunk_elems, float frac) {
  VIT_CHECK(frac >= 0.0f && frac <= 1.0f, "gemini: an offload fraction must lie in [0, 1], got ", frac);
  const int n = static_cast<int>(chunk_elems.size());
  if (frac <= 0.0f || n == 0) return 0;
  if (frac >= 1.0f) return n;
  int64_t total = 0;
  for (int64_t e : chunk_elems) total += e;
  const double want = static_cast<double>(frac) * static_cast<double>(total);
  int best = 1;
  double best_err = std::abs(static_cast<double>(chunk_elems[0]) - want);
  int64_t cum = chunk_elems[0];
  for (int i = 2; i <= n; ++i) {
    cum += chunk_elems[static_cast<size_t>(i - 1)];
    const double err = std::abs(static_cast<double>(cum) - want);
    if (err < best_err) {
      best = i;
      best_err = err;
    }
  }
  return best;
}

namespace {

constexpr int kParamSlots = 3;  // gathered chunks: the one in use, the prefetched one, one kept for reuse
constexpr int kGradSlots = 2;   // fp32 chunk gradients: one written by backward, one being reduced
constexpr int64_t kSumPartials = 4096;  // sum_squares_flag's per-block partials (4 x the SM count suffices)

std::string fraction_text(double f) {
  char buf[32];
  if (std::abs(f * 10.0 - std::round(f * 10.0)) < 1e-6) {
    std::snprintf(buf, sizeof(buf), "%.1f", f);
  } else {
    std::snprintf(buf, sizeof(buf), "%.3g", f);
  }
  return buf;
}

// What this rank keeps of one chunk: its part of everything, on the device or
// in pinned host memory.
struct ChunkState {
  int64_t part = 0;                  // elements of this rank's part
  bool optim_on_host = false;        // master, m, v, gradient in pinned host memory (CPU AdamW)
  bool param_on_host = false;        // the compute-dtype part too
  Buffer lowp;                       // compute dtype; empty when fp32 and aliased to master
  Buffer master, m, v, grad;         // fp32
  Buffer ema;                        // pinned fp32: the weight average of an offloaded part (ema_decay > 0);
                                     // a device part's lives in the StepFinisher
  Buffer incoming;                   // pinned: a later micro-batch's gradient part, added on the host
  Buffer staging;                    // pinned compute dtype: CPU AdamW's output for a device lowp part
  Event landed;                      // the last download of this chunk's gradient part
  Event uploaded;                    // the last upload of the CPU AdamW's output (device lowp part)
  bool incoming_pending = false;

  const Buffer& lowp_or_master() const { return lowp.empty() ? master : lowp; }
};

class GeminiPlugin final : public Plugin, private model::ParamSource {
 public:
  GeminiPlugin(const PluginOptions& opts, const model::ViTConfig& cfg, const model::ComputeConfig& compute,
               int max_micro_batch, const PluginEnv& env)
      : opts_(opts),
        ctx_(env.ctx),
        dp_(env.mesh->dp_comm()),
        model_(cfg, compute, env.ctx, max_micro_batch),
        chunks_(model_.layout(), gemini_chunk_groups(model_.layout(), chunk_elems(opts, model_.compute().dtype)),
                dp_.size(), dp_.rank()),
        comm_stream_(env.ctx.device),
        offload_stream_(env.ctx.device),
        pool_(chunks_, dp_, env.ctx, model_.compute().dtype,
              std::min<int>(kParamSlots, static_cast<int>(chunks_.buckets().size())), comm_stream_.handle()),
        stager_(cfg, env.ctx, max_micro_batch),
        finisher_(env.ctx, opts.optimizer(), &dp_),
        ready_(env.ctx.device),
        done_(env.ctx.device),
        updated_(env.ctx.device),
        timeline_(env.ctx.device),
        device_scalars_(8 * sizeof(float), env.ctx.device),
        host_scalars_(16 * sizeof(float), Device::CPU, HostMemory::Pinned) {
    VIT_CHECK(env.mesh->tp_size() == 1 && env.mesh->pp_size() == 1,
              "gemini is data parallel only; tensor/pipeline layouts need hybrid_parallel");
    const GeminiOptions& g = opts.gemini;
    if (g.offload_param_frac > g.offload_optim_frac) {
      throw UserError(str_cat("plugin.offload_param_frac: ", g.offload_param_frac, " is above plugin.offload_optim_frac ",
                              g.offload_optim_frac, " (allowed: at most offload_optim_frac; a chunk whose "
                              "parameters live on the host is updated there by the CPU AdamW)"));
    }
    comm_ctx_ = ctx_;
    comm_ctx_.stream = comm_stream_.handle();
    const size_t n = chunks_.buckets().size();
    std::vector<int64_t> sizes;
    for (size_t c = 0; c < n; ++c) sizes.push_back(chunks_.buckets()[c].end - chunks_.buckets()[c].begin);
    optim_host_chunks_ = gemini_offload_count(sizes, g.offload_optim_frac);
    param_host_chunks_ = gemini_offload_count(sizes, g.offload_param_frac);
    const DType cd = model_.compute().dtype;
    const Device dev = ctx_.device;
    for (size_t c = 0; c < n; ++c) {
      ChunkState st;
      st.part = chunks_.part_size(static_cast<int>(c));
      st.optim_on_host = static_cast<int>(c) < optim_host_chunks_;
      st.param_on_host = static_cast<int>(c) < param_host_chunks_;
      const size_t f32_bytes = static_cast<size_t>(st.part) * 4;
      auto alloc = [&](size_t bytes, bool host) {
        return host ? Buffer(bytes, Device::CPU, HostMemory::Pinned) : Buffer(bytes, dev);
      };
      st.master = alloc(f32_bytes, st.optim_on_host);
      st.m = alloc(f32_bytes, st.optim_on_host);
      st.v = alloc(f32_bytes, st.optim_on_host);
      st.grad = alloc(f32_bytes, st.optim_on_host);
      st.master.zero();
      st.m.zero();
      st.v.zero();
      st.grad.zero();
      // fp32 compute reads the master weights themselves where both live together.
      if (!(cd == DType::F32 && st.param_on_host == st.optim_on_host)) {
        st.lowp = alloc(static_cast<size_t>(st.part) * dtype_size(cd), st.param_on_host);
        st.lowp.zero();
      }
      if (st.optim_on_host && opts.ema_decay > 0.0f) st.ema = alloc(f32_bytes, true);
      if (st.optim_on_host && !st.param_on_host && cd != DType::F32) {
        st.staging = Buffer(static_cast<size_t>(st.part) * dtype_size(cd), Device::CPU, HostMemory::Pinned);
      }
      st.landed = Event(dev);
      st.uploaded = Event(dev);
      const Buffer& part = st.lowp_or_master();
      pool_.set_part(static_cast<int>(c), part.data(), part.device());
      state_.push_back(std::move(st));
    }
    for (int i = 0; i < std::min<int>(kGradSlots, static_cast<int>(n)); ++i) {
      GradSlot s;
      int64_t largest = 0;
      for (const Bucket& b : chunks_.buckets()) largest = std::max(largest, b.padded_size);
      s.buf = Buffer(static_cast<size_t>(largest) * 4, dev);
      s.free = Event(dev);
      grad_slots_.push_back(std::move(s));
    }
    grad_slot_of_chunk_.assign(n, -1);
    const auto& ps = model_.layout().params();
    for (const auto& p : ps) {
      const int64_t at = chunks_.padded_offset(p.offset);
      int c = -1;
      for (size_t b = 0; b < n; ++b) {
        if (p.offset >= chunks_.buckets()[b].begin && p.offset < chunks_.buckets()[b].end) c = static_cast<int>(b);
      }
      VIT_CHECK(c >= 0, "gemini: parameter ", p.name, " is in no chunk");
      chunk_of_param_.push_back(c);
      offset_in_chunk_.push_back(at - chunks_.buckets()[static_cast<size_t>(c)].padded_begin);
    }
    prefetch_ = opts.overlap_comm && pool_.slots() >= 2;
    compute_span_.assign(n, -1);
    update_pending_.assign(n, 0);
    pending_.begin.resize(n);
    pending_.end.resize(n);
    if (dev == Device::CUDA) sum_partials_ = Buffer(static_cast<size_t>(kSumPartials) * 4, dev);
    pool_.set_timeline(&timeline_);
    // No gather reads a chunk part before its pending CPU update has run.
    pool_.set_gather_guard([this](int c) { collect_update(c); });
    build_views();
    model_.set_param_source(this);
  }

  ~GeminiPlugin() override {
    // The worker may still be updating host parts that are freed below. (It
    // is also the last member, so its own destructor waits first.) A failed
    // update is dropped: nothing reads the state any more.
    try {
      worker_.wait_all();
    } catch (...) {
    }
  }

  std::string name() const override { return "gemini"; }

  std::vector<std::string> notes() const override {
    std::vector<std::string> out;
    if (!model_.attention_note().empty()) out.push_back(str_cat("attention: ", model_.attention_note()));
    const DType cd = model_.compute().dtype;
    int64_t largest = 0, optim_host = 0, param_host = 0, total = 0;
    for (size_t c = 0; c < chunks_.buckets().size(); ++c) {
      const Bucket& b = chunks_.buckets()[c];
      largest = std::max(largest, b.end - b.begin);
      total += b.end - b.begin;
      if (state_[c].optim_on_host) optim_host += b.end - b.begin;
      if (state_[c].param_on_host) param_host += b.end - b.begin;
    }
    out.push_back(str_cat("gemini: ", chunks_.buckets().size(), " chunks of whole blocks, the largest ",
                          fmt_mib(static_cast<double>(largest) * dtype_size(cd)), " MiB of ", dtype_name(cd),
                          "; each rank keeps 1/", dp_.size(), " of every chunk; ", pool_.slots(),
                          " gathered-chunk slots (", fmt_mib(static_cast<double>(pool_.slots() * pool_.slot_bytes())),
                          " MiB), prefetch ", prefetch_ ? "on" : "off"));
    out.push_back(str_cat("gemini: optimizer states of ", optim_host_chunks_, " chunk(s) (",
                          fraction_text(static_cast<double>(optim_host) / static_cast<double>(total)),
                          " of the parameters) in pinned host memory, updated by the CPU AdamW; parameters of ",
                          param_host_chunks_, " chunk(s) (",
                          fraction_text(static_cast<double>(param_host) / static_cast<double>(total)),
                          ") kept on the host between uses"));
    return out;
  }

  std::string variant() const override {
    std::string v = str_cat("offload ", fraction_text(opts_.gemini.offload_optim_frac));
    if (opts_.gemini.offload_param_frac > 0.0f) {
      v += str_cat(", param offload ", fraction_text(opts_.gemini.offload_param_frac));
    }
    using Mode = GeminiOptions::CpuUpdate;  // named only when plugin.cpu_update chose it
    if (opts_.gemini.offload_optim_frac > 0.0f && opts_.gemini.cpu_update == Mode::Overlap) v += ", cpu update overlap";
    if (opts_.gemini.offload_optim_frac > 0.0f && opts_.gemini.cpu_update == Mode::Synchronous) {
      v += ", cpu update synchronous";
    }
    return v;
  }
  int data_parallel_size() const override { return dp_.size(); }
  int data_parallel_rank() const override { return dp_.rank(); }
  void record_timeline() override { timeline_next_ = true; }
  std::string timeline() const override { return timeline_text_; }

  // The average of the device parts lives in the StepFinisher (its views
  // are device_views_), that of offloaded parts in st.ema, updated by the
  // worker after the chunk's CPU AdamW: every pending update has run first.
  void swap_ema() override {
    VIT_CHECK(finisher_.has_ema(), "gemini: swap_ema without a weight average (train.ema_decay is 0)");
    settle();
    finisher_.swap_ema(device_views_);
    ensure_host_ema();
    for (ChunkState& st : state_) {
      if (!st.optim_on_host || st.part == 0) continue;
      k::cpu::swap_values(Context{}, tensor_of(st.master, DType::F32, {st.part}), tensor_of(st.ema, DType::F32, {st.part}));
      refresh_lowp(st, st.master.as<float>());  // the part the gathers read (host, or uploaded)
    }
    // Gathered chunks in the pool hold the other weights.
    parameters_changed();
    synchronize_stream(ctx_.stream);
  }

  size_t optimizer_state_bytes() const override {
    size_t bytes = 0;
    for (const ChunkState& st : state_) bytes += st.master.bytes() + st.m.bytes() + st.v.bytes();
    return bytes;
  }

  void load_params(const std::vector<float>& full) override {
    const int64_t N = model_.layout().total();
    VIT_CHECK(static_cast<int64_t>(full.size()) == N, "load_params: ", full.size(), " values for a model of ", N);
    settle();
    std::vector<float> padded(static_cast<size_t>(chunks_.padded_total()));
    chunks_.pad(full.data(), padded.data());
    for (size_t c = 0; c < state_.size(); ++c) {
      ChunkState& st = state_[c];
      const float* mine = padded.data() + chunks_.part_begin(static_cast<int>(c));
      copy_bytes(st.master.data(), st.master.device(), mine, Device::CPU, static_cast<size_t>(st.part) * 4);
      st.m.zero();
      st.v.zero();
      refresh_lowp(st, mine);
    }
    reset_ema();  // the average starts again from these weights
    parameters_changed();
    synchronize_stream(ctx_.stream);
  }

  std::vector<float> gather_params() override {
    settle();
    std::vector<const Buffer*> parts;
    for (const ChunkState& st : state_) parts.push_back(&st.master);
    return gather_parts(parts, 1.0);
  }

  std::vector<float> gather_grads() override {
    VIT_CHECK(last_loss_scale_ > 0.0f, "gather_grads: no train_step has run yet");
    settle();
    std::vector<const Buffer*> parts;
    for (const ChunkState& st : state_) parts.push_back(&st.grad);
    // The shards hold the loss-scaled sums (AdamW undoes the scale through its
    // grad_scale and never rescales them); divide in double, round once.
    return gather_parts(parts, 1.0 / static_cast<double>(last_loss_scale_));
  }

  // Checkpoints. Rank r holds part r of every chunk (master weights, AdamW
  // m and v; on the device, or in pinned host memory for an offloaded
  // chunk): it writes the real elements of those parts and reads exactly
  // them back, whatever layout wrote the checkpoint. A chunk's real elements
  // come first in its padded range, so part r's real ones start at the
  // part's first element. With ema_decay > 0 the weight average is part Ema,
  // laid out as the master weights (the StepFinisher's for device parts,
  // st.ema for offloaded ones).
  std::vector<TensorRun> state_runs() const override {
    std::vector<TensorRun> runs;
    for (size_t c = 0; c < state_.size(); ++c) {
      const auto [lo, hi] = owned_range(static_cast<int>(c));
      append_runs(lo, hi, runs);
    }
    return runs;
  }

  std::vector<StatePart> state_parts() const override {
    return state_parts_with(finisher_.has_ema());
  }

  std::vector<float> export_state(StatePart part) override {
    // Every update (device AdamW, CPU AdamW of offloaded chunks, uploads)
    // has landed before the host reads the parts.
    settle();
    if (part == StatePart::Ema) {
      VIT_CHECK(finisher_.has_ema(), "gemini: export_state(ema) without a weight average (train.ema_decay is 0)");
      begin_ema_access();
    }
    std::vector<float> out, ema;
    for (size_t c = 0; c < state_.size(); ++c) {
      const auto [lo, hi] = owned_range(static_cast<int>(c));
      if (hi <= lo) continue;
      const size_t n = static_cast<size_t>(hi - lo);
      out.resize(out.size() + n);
      float* dst = out.data() + out.size() - n;
      if (part == StatePart::Ema) {
        ema.assign(static_cast<size_t>(state_[c].part), 0.0f);
        read_ema(static_cast<int>(c), ema.data());
        std::copy(ema.begin(), ema.begin() + static_cast<int64_t>(n), dst);
        continue;
      }
      const Buffer& src = state_buffer(state_[c], part);
      copy_bytes(dst, Device::CPU, src.data(), src.device(), n * sizeof(float));
    }
    return out;
  }

  void import_state(const StateReader& read, bool has_ema) override {
    settle();
    std::vector<float> host;
    const bool ema = finisher_.has_ema() && has_ema;  // a checkpoint's average without ema_decay is not read
    const std::vector<StatePart> parts = state_parts_with(ema);
    for (StatePart part : parts) {
      if (part == StatePart::Ema) begin_ema_access();  // after the master weights: a fresh average, overwritten
      for (size_t c = 0; c < state_.size(); ++c) {
        ChunkState& st = state_[c];
        host.assign(static_cast<size_t>(st.part), 0.0f);  // padding stays zero, as AdamW keeps it
        const auto [lo, hi] = owned_range(static_cast<int>(c));
        std::vector<TensorRun> runs;
        append_runs(lo, hi, runs);
        int64_t pos = 0;
        for (const TensorRun& r : runs) {
          read(part, r, host.data() + pos);
          pos += r.count;
        }
        if (part == StatePart::Ema) {
          write_ema(static_cast<int>(c), host.data());
          continue;
        }
        Buffer& dst = state_buffer(st, part);
        copy_bytes(dst.data(), dst.device(), host.data(), Device::CPU, host.size() * sizeof(float));
        // The copy the chunk gathers read (compute dtype, device or host),
        // from the imported master weights; none for fp32 read in place.
        if (part == StatePart::Master) refresh_lowp(st, host.data());
      }
    }
    if (ema) {
      host_ema_fresh_ = true;  // the next step continues the imported average
    } else {
      reset_ema();  // none in the checkpoint (or written with ema_decay 0): afresh from the imported weights
    }
    // Gathered chunks in the pool hold the old weights.
    parameters_changed();
    synchronize_stream(ctx_.stream);
  }

  StepResult train_step(const std::vector<MicroBatch>& micro, int64_t global_count, float lr, float loss_scale,
                        int64_t adam_step) override {
    VIT_CHECK(!micro.empty() && global_count > 0, "train_step needs micro-batches and a positive global count");
    VIT_CHECK(loss_scale > 0.0f && std::isfinite(loss_scale), "train_step: loss_scale must be positive and finite, got ",
              loss_scale);
    training_ = true;
    if (timeline_next_) timeline_.begin_step(ctx_.stream);
    micro_count_ = static_cast<int>(micro.size());
    if (optim_host_chunks_ > 0) {
      // The norm's share of the offloaded chunks, summed on the communication
      // stream after each reduce-scatter (one micro-batch; see reduce_chunk).
      k::fill(ctx_, Tensor(device_scalars_.as<float>() + 4, DType::F32, ctx_.device, {2}), 0.0f);
    }
    // The loss gradient is scaled by 1/global batch (a mean over every rank's
    // images) and by the fp16 loss scale: the reductions sum.
    const float grad_scale = loss_scale / static_cast<float>(global_count);
    size_t loss_slots = 0;
    for (const MicroBatch& mb : micro) loss_slots += static_cast<size_t>(mb.count);
    if (host_losses_.bytes() < loss_slots * 4) host_losses_ = Buffer(loss_slots * 4, Device::CPU, HostMemory::Pinned);
    size_t filled = 0;
    for (size_t i = 0; i < micro.size(); ++i) {
      const MicroBatch& mb = micro[i];
      micro_index_ = static_cast<int>(i);
      if (mb.count == 0) {
        walk_hooks(true);  // no images: still joins every gather and reduce-scatter
        continue;
      }
      Tensor images, labels;
      stager_.stage(mb, &images, &labels);
      model_.set_train_extras(stager_.extras());  // mixup/cutmix targets, the masks' noise key
      model_.forward_backward(images, labels, mb.count, grad_scale);
      copy_bytes_async(host_losses_.as<float>() + filled, model_.losses(mb.count).data,
                       static_cast<size_t>(mb.count) * 4, ctx_.stream);
      filled += static_cast<size_t>(mb.count);
    }
    // Every device gradient part is reduced before the norm reads it.
    done_.record(comm_stream_.handle());
    stream_wait_event(ctx_.stream, done_);
    // Gathered copies are stale once the update runs (and none may be in flight).
    pool_.invalidate();
    float grad_norm = 0.0f;
    bool skipped = false;
    if (optim_host_chunks_ == 0) {
      const int span = timeline_.begin("compute", "norm+adamw", -1, ctx_.stream);
      finisher_.finish(device_views_, lr, loss_scale, adam_step);
      timeline_.end(span, ctx_.stream);
      finisher_.read_back();
    } else {
      finish_with_offload(lr, loss_scale, adam_step, &grad_norm, &skipped);
    }
    parameters_changed();
    // One host synchronisation per step, after all its work is queued.
    synchronize_stream(ctx_.stream);
    if (optim_host_chunks_ == 0) {
      grad_norm = finisher_.grad_norm();
      skipped = finisher_.skipped();
    }
    if (timeline_.on()) {
      // This step's own CPU updates too (in Overlap mode the next step would
      // have waited for them): the timeline shows them after its backward,
      // and the previous step's, collected by this step's gathers, as
      // "(prev step)" beside its forward.
      settle();
      timeline_text_ = str_cat("# gemini, rank ", dp_.rank(), " of ", dp_.size(), ", ", chunks_.buckets().size(),
                               " chunks (0 holds the head), ", micro.size(), " micro-batch(es), offload ",
                               fraction_text(opts_.gemini.offload_optim_frac), "\n", timeline_.report());
      timeline_.stop();
      timeline_next_ = false;
    }
    last_loss_scale_ = loss_scale;
    double local_loss = 0.0;
    for (size_t i = 0; i < filled; ++i) local_loss += host_losses_.as<float>()[i];
    float loss_sum = static_cast<float>(local_loss);
    dp_.all_reduce(&loss_sum, 1, DType::F32, comm::ReduceOp::Sum, Device::CPU);
    StepResult r;
    r.loss = loss_sum / static_cast<double>(global_count);
    r.grad_norm = grad_norm;
    r.skipped = skipped;
    return r;
  }

  EvalResult eval_batch(const MicroBatch& mb) override {
    finish_pending_update();
    training_ = false;
    EvalResult r;
    if (mb.count == 0) {
      walk_hooks(false);  // the gathers are collectives: join them
      return r;
    }
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
  struct GradSlot {
    Buffer buf;
    Event free;
    bool used = false;
  };

  static int64_t chunk_elems(const PluginOptions& opts, DType cd) {
    const size_t bytes = opts.gemini.chunk_bytes > 0 ? opts.gemini.chunk_bytes
                                                     : static_cast<size_t>(opts.gemini.chunk_size_mb) << 20;
    VIT_CHECK(bytes > 0, "gemini: plugin.chunk_size_mb must be at least 1");
    return std::max<int64_t>(1, static_cast<int64_t>(bytes / dtype_size(cd)));
  }

  static std::string fmt_mib(double bytes) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.2f", bytes / 1048576.0);
    return buf;
  }

  // --- model::ParamSource: chunks gathered before use, released after ---

  Tensor param(int index) override {
    const int c = chunk_of_param_[static_cast<size_t>(index)];
    const DType cd = model_.compute().dtype;
    char* base = static_cast<char*>(pool_.data(c)) +
                 offset_in_chunk_[static_cast<size_t>(index)] * static_cast<int64_t>(dtype_size(cd));
    return model::param_view(base, cd, ctx_.device, model_.layout()[index]);
  }

  Tensor grad(int index) override {
    const int c = chunk_of_param_[static_cast<size_t>(index)];
    const int s = grad_slot_of_chunk_[static_cast<size_t>(c)];
    VIT_CHECK(s >= 0, "gemini: gradient of ", model_.layout()[index].name, " asked for outside its chunk's backward");
    float* base = grad_slots_[static_cast<size_t>(s)].buf.as<float>() + offset_in_chunk_[static_cast<size_t>(index)];
    return model::param_view(base, DType::F32, ctx_.device, model_.layout()[index]);
  }

  void before_forward(const model::Segment& s) override {
    const int c = chunks_.bucket_of(s);
    pool_.acquire(c);
    compute_span_[static_cast<size_t>(c)] = timeline_.begin("compute", "forward", c, ctx_.stream);
  }

  void after_forward(const model::Segment& s) override {
    const int c = chunks_.bucket_of(s);
    timeline_.end(compute_span_[static_cast<size_t>(c)], ctx_.stream);
    // The next chunk's gather once this chunk's forward is queued (its last
    // segment; still in use, so the pool decides as it would have before
    // the forward): when that gather must first wait for the chunk's CPU
    // update, the GPU already has this chunk's forward to run meanwhile.
    // Forward goes from the embeddings' chunk (the last) to the head's (0);
    // after the head's comes backward's second chunk.
    if (prefetch_ && chunks_.is_first_of_bucket(s)) pool_.prefetch(c > 0 ? c - 1 : (training_ ? 1 : -1));
    pool_.release(c);
  }

  void before_backward(const model::Segment& s) override {
    const int c = chunks_.bucket_of(s);
    pool_.acquire(c);
    if (prefetch_) pool_.prefetch(c + 1);
    if (grad_slot_of_chunk_[static_cast<size_t>(c)] < 0) take_grad_slot(c);
    compute_span_[static_cast<size_t>(c)] = timeline_.begin("compute", "backward", c, ctx_.stream);
  }

  void after_backward(const model::Segment& s) override {
    const int c = chunks_.bucket_of(s);
    timeline_.end(compute_span_[static_cast<size_t>(c)], ctx_.stream);
    pool_.release(c);
    if (chunks_.is_last_of_bucket(s)) reduce_chunk(c);
  }

  // The hooks of a pass without compute (a rank without images): the same
  // gathers and (zero) reduce-scatters as everyone else, in the same order.
  void walk_hooks(bool backward) {
    const std::vector<model::Segment> segs = model_.layout().segments();
    for (const model::Segment& s : segs) {
      before_forward(s);
      after_forward(s);
    }
    if (!backward) return;
    for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
      before_backward(*it);
      after_backward(*it);
    }
  }

  void take_grad_slot(int c) {
    const int s = next_grad_slot_;
    next_grad_slot_ = (next_grad_slot_ + 1) % static_cast<int>(grad_slots_.size());
    GradSlot& slot = grad_slots_[static_cast<size_t>(s)];
    if (slot.used) stream_wait_event(ctx_.stream, slot.free);  // its last reduction has read it
    slot.used = true;
    grad_slot_of_chunk_[static_cast<size_t>(c)] = s;
    const int64_t n = chunks_.buckets()[static_cast<size_t>(c)].padded_size;
    k::fill(ctx_, Tensor(slot.buf.data(), DType::F32, ctx_.device, {n}), 0.0f);
  }

  // Chunk c's backward is done: reduce-scatter its gradient slot and add this
  // rank's part into the chunk's gradient shard (on the device, or through a
  // download into pinned host memory for an offloaded chunk).
  void reduce_chunk(int c) {
    const int s = grad_slot_of_chunk_[static_cast<size_t>(c)];
    VIT_CHECK(s >= 0, "gemini: chunk ", c, " reduced without a gradient slot");
    GradSlot& slot = grad_slots_[static_cast<size_t>(s)];
    ChunkState& st = state_[static_cast<size_t>(c)];
    const int64_t part = st.part;
    float* base = slot.buf.as<float>();
    float* mine = base + static_cast<int64_t>(dp_.rank()) * part;
    void* comm = comm_stream_.handle();
    ready_.record(ctx_.stream);
    stream_wait_event(comm, ready_);
    const int span = timeline_.begin("comm", "reduce-scatter", c, comm);
    if (dp_.size() > 1) {
      dp_.reduce_scatter(base, mine, static_cast<size_t>(part), DType::F32, comm::ReduceOp::Sum, ctx_.device, comm);
    }
    const bool first = micro_index_ == 0;
    if (!st.optim_on_host) {
      if (first) {
        copy_bytes_async(st.grad.data(), mine, static_cast<size_t>(part) * 4, comm);
      } else {
        k::accumulate(comm_ctx_, tensor_of(st.grad, DType::F32, {part}), Tensor(mine, DType::F32, ctx_.device, {part}));
      }
      timeline_.end(span, comm);
      slot.free.record(comm);
    } else {
      // The previous micro-batch's part must be added before its buffer is
      // reused; the CPU AdamW of the last step must be done with the chunk
      // (its forward gathered it, so it is).
      timeline_.end(span, comm);
      collect_update(c);
      add_incoming(st);
      if (micro_count_ == 1 && part > 0) {
        // The norm's share of the part (sum of squares, non-finite flag),
        // taken on the device before the part leaves for the host: the step
        // needs no pass over host memory before its AdamW can start. The
        // download below waits for it (the slot is freed after the download).
        float* ds = device_scalars_.as<float>();
        Tensor partial;
        if (!sum_partials_.empty()) partial = tensor_of(sum_partials_, DType::F32, {kSumPartials});
        k::sum_squares_flag(comm_ctx_, Tensor(ds + 4, DType::F32, ctx_.device, {1}),
                            Tensor(ds + 5, DType::F32, ctx_.device, {1}), Tensor(mine, DType::F32, ctx_.device, {part}),
                            partial);
      }
      ready_.record(comm);
      offload_stream_.wait(ready_);
      const int down = timeline_.begin("offload", "download grad", c, offload_stream_.handle());
      if (!first && st.incoming.empty()) {
        st.incoming = Buffer(static_cast<size_t>(part) * 4, Device::CPU, HostMemory::Pinned);
      }
      void* dst = first ? st.grad.data() : st.incoming.data();
      copy_bytes_async(dst, mine, static_cast<size_t>(part) * 4, offload_stream_.handle());
      timeline_.end(down, offload_stream_.handle());
      st.landed.record(offload_stream_.handle());
      slot.free.record(offload_stream_.handle());
      st.incoming_pending = !first;
    }
    grad_slot_of_chunk_[static_cast<size_t>(c)] = -1;
  }

  void add_incoming(ChunkState& st) {
    if (!st.incoming_pending) return;
    st.landed.synchronize();
    k::cpu::accumulate(Context{}, tensor_of(st.grad, DType::F32, {st.part}), tensor_of(st.incoming, DType::F32, {st.part}));
    st.incoming_pending = false;
  }

  // Local elements [lo, hi) of chunk c's part owned by this rank that are
  // real (not padding).
  std::pair<int64_t, int64_t> owned_range(int c) const {
    const Bucket& b = chunks_.buckets()[static_cast<size_t>(c)];
    const int64_t ps = chunks_.part_size(c), real = b.end - b.begin, r = dp_.rank();
    return {b.begin + std::min(real, r * ps), b.begin + std::min(real, (r + 1) * ps)};
  }

  // The parameters' runs covering local elements [lo, hi) (the layout is
  // unsharded: data parallel only).
  void append_runs(int64_t lo, int64_t hi, std::vector<TensorRun>& out) const {
    append_param_runs(model_.layout(), lo, hi, out);
  }

  // The fp32 buffer of a chunk part holding state part `part`.
  static Buffer& state_buffer(ChunkState& st, StatePart part) {
    switch (part) {
      case StatePart::Master: return st.master;
      case StatePart::AdamM: return st.m;
      case StatePart::AdamV: return st.v;
      case StatePart::Ema: break;
    }
    VIT_THROW("gemini: no chunk buffer for state part ", state_part_name(part),
              " (the average: read_ema/write_ema)");
  }

  // --- the weight average (ema_decay > 0) ---

  // The next step starts the average afresh from the weights (load, or an
  // import without one).
  void reset_ema() {
    finisher_.reset_ema();
    host_ema_fresh_ = false;
  }

  // Offloaded parts: the average starts as a copy of the master weights
  // (before the first update after a reset). Main thread, no update pending.
  void ensure_host_ema() {
    if (!finisher_.has_ema() || host_ema_fresh_) return;
    for (ChunkState& st : state_) {
      if (!st.optim_on_host || st.part == 0) continue;
      std::copy(st.master.as<float>(), st.master.as<float>() + st.part, st.ema.as<float>());
    }
    host_ema_fresh_ = true;
  }

  // Before read_ema/write_ema: both averages exist (made from the weights
  // when no step ran since a reset) and the device's has landed.
  void begin_ema_access() {
    finisher_.begin_ema(device_views_);
    ensure_host_ema();
    synchronize_stream(ctx_.stream);
  }

  // Chunk c's part of the average <-> dst/src (host, st.part values, laid
  // out as the part's master weights): st.ema, or the StepFinisher's
  // averages of the device views inside the part (split views cover it
  // exactly, padding included).
  void read_ema(int c, float* dst) {
    ChunkState& st = state_[static_cast<size_t>(c)];
    if (st.optim_on_host) {
      std::copy(st.ema.as<float>(), st.ema.as<float>() + st.part, dst);
      return;
    }
    for (size_t i = 0; i < device_views_.size(); ++i) {
      if (device_view_chunk_[i] != c || device_views_[i].master.numel() == 0) continue;
      const Tensor e = finisher_.ema_of(device_views_, i);
      copy_bytes(dst + view_offset(i), Device::CPU, e.data, ctx_.device, static_cast<size_t>(e.numel()) * 4);
    }
  }
  void write_ema(int c, const float* src) {
    ChunkState& st = state_[static_cast<size_t>(c)];
    if (st.optim_on_host) {
      std::copy(src, src + st.part, st.ema.as<float>());
      return;
    }
    for (size_t i = 0; i < device_views_.size(); ++i) {
      if (device_view_chunk_[i] != c || device_views_[i].master.numel() == 0) continue;
      const Tensor e = finisher_.ema_of(device_views_, i);
      copy_bytes(e.data, ctx_.device, src + view_offset(i), Device::CPU, static_cast<size_t>(e.numel()) * 4);
    }
  }
  // Where device view i starts in its chunk part.
  int64_t view_offset(size_t i) const {
    const ChunkState& st = state_[static_cast<size_t>(device_view_chunk_[i])];
    return static_cast<const float*>(device_views_[i].master.data) - st.master.as<float>();
  }

  // The compute-dtype part the chunk gathers read (st.lowp: device or pinned
  // host), cast from this part's fp32 master weights `host_master` (host
  // memory, st.part values). Nothing to do for fp32 read in place.
  void refresh_lowp(ChunkState& st, const float* host_master) {
    if (st.lowp.empty()) return;
    const DType cd = model_.compute().dtype;
    if (st.lowp.device() == Device::CPU) {
      k::cpu::cast(Context{}, Tensor(st.lowp.data(), cd, Device::CPU, {st.part}),
                   Tensor(const_cast<float*>(host_master), DType::F32, Device::CPU, {st.part}));
    } else {
      const size_t bytes = static_cast<size_t>(st.part) * 4;
      Buffer staged(bytes, ctx_.device);
      copy_bytes(staged.data(), ctx_.device, host_master, Device::CPU, bytes);
      k::cast(ctx_, Tensor(st.lowp.data(), cd, ctx_.device, {st.part}), tensor_of(staged, DType::F32, {st.part}));
      synchronize_stream(ctx_.stream);  // `staged` is freed on return
    }
  }

  // The parameters changed (update, load): the gathers that follow must see
  // the new parts.
  void parameters_changed() {
    pool_.invalidate();
    updated_.record(ctx_.stream);
    stream_wait_event(comm_stream_.handle(), updated_);
  }

  // The parts this rank updates, as ShardViews: the device parts for the
  // StepFinisher (device_views_) and each offloaded part for the CPU AdamW
  // (host_views_[c]; its compute-dtype output is the host part the gathers
  // read, or the pinned staging buffer uploaded to the device part). When
  // parameters differ in lr or weight decay (param_groups.h) each is split
  // at parameter boundaries, also where padding cuts a chunk, as
  // data_parallel splits its buckets; otherwise one view per part, so the
  // updates are the same calls as without groups.
  void build_views() {
    const DType cd = model_.compute().dtype;
    std::vector<ShardView> device;
    std::vector<int64_t> device_begin;  // where each device view starts in the padded chunk space
    std::vector<std::pair<int64_t, int64_t>> ranges;  // each parameter's [begin, end) there
    for (const model::ParamInfo& p : model_.layout().params()) {
      const int64_t at = chunks_.padded_offset(p.offset);
      ranges.emplace_back(at, at + p.numel);
    }
    const std::vector<ParamMultipliers> mult =
        opts_.groups.active() ? param_multipliers(model_.layout(), opts_.groups) : std::vector<ParamMultipliers>();
    host_views_.assign(state_.size(), {});
    for (size_t c = 0; c < state_.size(); ++c) {
      ChunkState& st = state_[c];
      ShardView v;
      v.master = tensor_of(st.master, DType::F32, {st.part});
      v.m = tensor_of(st.m, DType::F32, {st.part});
      v.v = tensor_of(st.v, DType::F32, {st.part});
      v.grad = tensor_of(st.grad, DType::F32, {st.part});
      const int64_t begin = chunks_.part_begin(static_cast<int>(c));
      if (!st.optim_on_host) {
        if (!st.lowp.empty()) v.lowp = tensor_of(st.lowp, cd, {st.part});
        device.push_back(v);
        device_begin.push_back(begin);
        continue;
      }
      if (st.param_on_host && !st.lowp.empty()) v.lowp = tensor_of(st.lowp, cd, {st.part});
      if (!st.param_on_host && !st.staging.empty()) v.lowp = tensor_of(st.staging, cd, {st.part});
      host_views_[c] = opts_.groups.active() ? split_views({v}, {begin}, ranges, mult) : std::vector<ShardView>{v};
    }
    device_views_ = opts_.groups.active() ? split_views(device, device_begin, ranges, mult) : device;
    // The chunk each device view lies in (the average's checkpoint part is per chunk).
    device_view_chunk_.clear();
    for (const ShardView& dv : device_views_) {
      const float* at = static_cast<const float*>(dv.master.data);
      int owner = -1;
      for (size_t c = 0; c < state_.size(); ++c) {
        const float* base = state_[c].master.as<float>();
        if (!state_[c].optim_on_host && at >= base && at + dv.master.numel() <= base + state_[c].part) {
          owner = static_cast<int>(c);
        }
      }
      VIT_CHECK(owner >= 0 || dv.master.numel() == 0, "gemini: a device view lies in no chunk part");
      device_view_chunk_.push_back(owner);
    }
  }

  // The step with offloaded chunks: the norm's sum of squares and the
  // non-finite flag from the device parts (device kernels) and the host parts
  // (taken on the device before their download with one micro-batch; with
  // several, on the host chunk by chunk as each last part lands and is
  // added), summed over the ranks on the host; the clip factor on the host;
  // then AdamW on the device for device chunks (queued) and, for the
  // offloaded ones, the CPU AdamW on the worker thread (start_cpu_updates).
  void finish_with_offload(float lr, float loss_scale, int64_t adam_step, float* grad_norm, bool* skipped) {
    finish_pending_update();  // none: this step's forward gathered every chunk
    const Context host_ctx;
    float* ds = device_scalars_.as<float>();  // device chunks: sumsq, flag, factor, (unused); offloaded: sumsq, flag
    float* hs = host_scalars_.as<float>();    // sumsq, flag, factor, norm; [8, 14): a copy of ds
    auto dev1 = [&](int i) { return Tensor(ds + i, DType::F32, ctx_.device, {1}); };
    auto host1 = [&](int i) { return Tensor(hs + i, DType::F32, Device::CPU, {1}); };
    k::fill(ctx_, Tensor(ds, DType::F32, ctx_.device, {4}), 0.0f);
    for (const ChunkState& st : state_) {
      if (st.optim_on_host || st.part == 0) continue;
      k::sum_squares(ctx_, dev1(0), tensor_of(st.grad, DType::F32, {st.part}));
      k::nonfinite_flag(ctx_, dev1(1), tensor_of(st.grad, DType::F32, {st.part}));
    }
    copy_bytes_async(hs + 8, ds, 6 * sizeof(float), ctx_.stream);
    hs[0] = hs[1] = 0.0f;
    if (micro_count_ > 1) {
      // Host parts summed over micro-batches on the host: their share of the
      // norm in one sweep per chunk, each as soon as its last part landed.
      for (ChunkState& st : state_) {
        if (!st.optim_on_host) continue;
        add_incoming(st);
        st.landed.synchronize();
        if (st.part == 0) continue;
        k::cpu::sum_squares_flag(host_ctx, host1(0), host1(1), tensor_of(st.grad, DType::F32, {st.part}), Tensor());
      }
    }
    synchronize_stream(ctx_.stream);
    if (micro_count_ == 1) {
      hs[0] = hs[12];
      hs[1] = hs[13];
    }
    hs[0] += hs[8];
    hs[1] += hs[9];
    // Shards: the sum of squares and the flag (nonzero exactly when some rank
    // saw a non-finite value) over the group.
    if (dp_.size() > 1) dp_.all_reduce(hs, 2, DType::F32, comm::ReduceOp::Sum, Device::CPU);
    k::cpu::grad_scale_from_norm(host_ctx, host1(2), host1(3), host1(0), opts_.grad_clip, 1.0f / loss_scale);
    *grad_norm = hs[3];
    *skipped = hs[1] != 0.0f;
    k::AdamWHyper hp;
    hp.lr = lr;
    hp.beta1 = opts_.beta1;
    hp.beta2 = opts_.beta2;
    hp.eps = opts_.eps;
    hp.weight_decay = opts_.weight_decay;
    hp.step = adam_step;
    // Device chunks: the factor and the flag go up, the updates are queued.
    copy_bytes_async(ds + 1, hs + 1, 2 * sizeof(float), ctx_.stream);  // flag, factor
    const int span = timeline_.begin("compute", "adamw (device chunks)", -1, ctx_.stream);
    finisher_.begin_ema(device_views_);  // the average starts from the weights before this update
    for (const ShardView& v : device_views_) {
      if (v.master.numel() == 0) continue;
      k::adamw_update(ctx_, v.master, v.m, v.v, v.grad, v.lowp, view_hyper(hp, v), dev1(2), dev1(1));
    }
    finisher_.update_ema(device_views_, dev1(1));  // skipped with the update
    timeline_.end(span, ctx_.stream);
    // Offloaded chunks: every gradient part must have landed before the CPU
    // reads it (and the last step's uploads, from the staging buffers the
    // CPU AdamW writes again, are done: the same stream).
    offload_stream_.synchronize();
    if (!*skipped) start_cpu_updates(hp, hs[2], hs[1]);
  }

  // The CPU AdamW of every offloaded chunk, on the worker thread, in the
  // order the next forward gathers them (forward starts with the last
  // chunk). train_step returns without waiting (CpuUpdate::Overlap); each
  // gather of a chunk waits for its update and queues its upload
  // (collect_update), and everything else that reads parameters or
  // optimizer state first calls finish_pending_update.
  void start_cpu_updates(const k::AdamWHyper& hp, float factor, float flag) {
    pending_.hp = hp;
    pending_.factor = factor;
    pending_.flag = flag;
    pending_.in_timeline = timeline_.on();
    ensure_host_ema();  // before the worker moves the weights
    update_order_.clear();
    for (int c = static_cast<int>(state_.size()) - 1; c >= 0; --c) {
      const ChunkState& st = state_[static_cast<size_t>(c)];
      if (!st.optim_on_host || st.part == 0) continue;
      update_order_.push_back(c);
      update_pending_[static_cast<size_t>(c)] = 1;
    }
    using Mode = GeminiOptions::CpuUpdate;
    Mode mode = opts_.gemini.cpu_update;
    if (mode == Mode::Auto) mode = ctx_.device == Device::CPU ? Mode::Synchronous : Mode::Overlap;
    worker_.start(update_order_, [this](int c) { cpu_update(c); }, mode == Mode::OnDemand);
    if (mode == Mode::Synchronous) finish_pending_update();
  }

  // The worker thread's task: the CPU AdamW of offloaded chunk c. It touches
  // only chunk c's host buffers and pending_ (the step's scalars, its own
  // time stamps); the main thread reads them after waiting for it.
  void cpu_update(int c) {
    k::adopt_cpu_threads();  // OpenMP's thread count is per thread
    pending_.begin[static_cast<size_t>(c)] = std::chrono::steady_clock::now();
    // One AdamW per run of equal lr and decay multipliers (one run, the
    // whole part, without parameter groups).
    for (const ShardView& v : host_views_[static_cast<size_t>(c)]) {
      if (v.master.numel() == 0) continue;
      k::cpu::adamw_update(Context{}, v.master, v.m, v.v, v.grad, v.lowp, view_hyper(pending_.hp, v),
                           Tensor(&pending_.factor, DType::F32, Device::CPU, {1}),
                           Tensor(&pending_.flag, DType::F32, Device::CPU, {1}));
    }
    // The part's weight average, after its update (swap_ema and export wait
    // for this task: finish_pending_update).
    if (opts_.ema_decay > 0.0f) {
      const ChunkState& st = state_[static_cast<size_t>(c)];
      k::cpu::ema_update(Context{}, tensor_of(st.ema, DType::F32, {st.part}), tensor_of(st.master, DType::F32, {st.part}),
                         opts_.ema_decay, Tensor(&pending_.flag, DType::F32, Device::CPU, {1}));
    }
    pending_.end[static_cast<size_t>(c)] = std::chrono::steady_clock::now();
  }

  // The step's AdamW settings for view v: its lr and weight decay times the
  // view's multipliers (StepFinisher::finish does the same for its views).
  static k::AdamWHyper view_hyper(const k::AdamWHyper& hp, const ShardView& v) {
    k::AdamWHyper vh = hp;
    vh.lr = hp.lr * v.lr_mult;
    vh.weight_decay = hp.weight_decay * v.wd_mult;
    return vh;
  }

  // Chunk c's pending CPU update has run: its span goes to the timeline, its
  // compute-dtype part is queued for upload (a device part) and the
  // communication stream, where every gather runs, waits for that upload.
  // Nothing to do when no update of c is pending.
  void collect_update(int c) {
    if (!update_pending_[static_cast<size_t>(c)]) return;
    worker_.wait(c);
    update_pending_[static_cast<size_t>(c)] = 0;
    const bool own = pending_.in_timeline;  // started in the step being recorded, or before it
    timeline_.host_span(own ? "cpu adamw" : "cpu adamw (prev step)", c, pending_.begin[static_cast<size_t>(c)],
                        pending_.end[static_cast<size_t>(c)]);
    ChunkState& st = state_[static_cast<size_t>(c)];
    if (st.param_on_host) return;  // the gathers upload the host part the CPU AdamW wrote
    void* offload = offload_stream_.handle();
    const Buffer& src = st.staging.empty() ? st.master : st.staging;  // fp32: the master weights themselves
    const int up = timeline_.begin("offload", own ? "upload params" : "upload params (prev step)", c, offload);
    copy_bytes_async(st.lowp.data(), src.data(), st.lowp.bytes(), offload);
    timeline_.end(up, offload);
    st.uploaded.record(offload);
    stream_wait_event(comm_stream_.handle(), st.uploaded);
  }

  // Every pending CPU update has run and its upload is queued. Called first
  // by everything that reads parameters or optimizer state other than the
  // gathers (which wait per chunk): evaluation, settle() and through it
  // load/gather/export/import; the destructor waits for the worker itself.
  void finish_pending_update() {
    for (int c : update_order_) collect_update(c);
  }

  // Every pending update has run and every queued gather, reduction, update,
  // download and upload has landed.
  void settle() {
    finish_pending_update();
    synchronize_stream(ctx_.stream);
    comm_stream_.synchronize();
    offload_stream_.synchronize();
  }

  // One fp32 part per chunk (device or host) -> the whole vector on every
  // rank, each chunk all-gathered through a device buffer of its padded size.
  // Collective.
  std::vector<float> gather_parts(const std::vector<const Buffer*>& parts, double scale) {
    std::vector<float> padded(static_cast<size_t>(chunks_.padded_total()));
    int64_t largest = 0;
    for (const Bucket& b : chunks_.buckets()) largest = std::max(largest, b.padded_size);
    Buffer whole(static_cast<size_t>(largest) * 4, ctx_.device);
    for (size_t c = 0; c < state_.size(); ++c) {
      const Bucket& b = chunks_.buckets()[c];
      const int64_t part = state_[c].part;
      float* mine = whole.as<float>() + static_cast<int64_t>(dp_.rank()) * part;
      copy_bytes(mine, ctx_.device, parts[c]->data(), parts[c]->device(), static_cast<size_t>(part) * 4);
      if (dp_.size() > 1) {
        dp_.all_gather(mine, whole.data(), static_cast<size_t>(part), DType::F32, ctx_.device, ctx_.stream);
        synchronize_stream(ctx_.stream);
      }
      copy_bytes(padded.data() + b.padded_begin, Device::CPU, whole.data(), ctx_.device,
                 static_cast<size_t>(b.padded_size) * 4);
    }
    std::vector<float> out(static_cast<size_t>(model_.layout().total()));
    chunks_.unpad(padded.data(), out.data());
    if (scale != 1.0) {
      for (float& g : out) g = static_cast<float>(g * scale);
    }
    return out;
  }

  PluginOptions opts_;
  Context ctx_, comm_ctx_;
  comm::Communicator& dp_;
  model::ViTModel model_;
  BucketLayout chunks_;  // one bucket per chunk, backward order (chunk 0 holds the head)
  Stream comm_stream_;     // gathers and reduce-scatters, in one order on every rank
  Stream offload_stream_;  // gradient downloads and parameter uploads of offloaded chunks
  ChunkPool pool_;
  BatchStager stager_;
  StepFinisher finisher_;
  std::vector<ChunkState> state_;
  std::vector<ShardView> device_views_;               // build_views(): what the StepFinisher updates
  std::vector<std::vector<ShardView>> host_views_;    // per chunk: what the CPU AdamW updates (offloaded only)
  std::vector<int> device_view_chunk_;                // the chunk of each device view
  bool host_ema_fresh_ = false;                       // the offloaded parts' st.ema hold the current average
  std::vector<GradSlot> grad_slots_;
  int next_grad_slot_ = 0;
  std::vector<int> grad_slot_of_chunk_;
  std::vector<int> chunk_of_param_;
  std::vector<int64_t> offset_in_chunk_;  // padded offset of each parameter inside its chunk
  int optim_host_chunks_ = 0, param_host_chunks_ = 0;
  bool prefetch_ = true;
  bool training_ = true;
  int micro_index_ = 0;
  int micro_count_ = 1;  // micro-batches of the step in progress
  Event ready_, done_, updated_;
  ChunkTimeline timeline_;   // benchmark mode: the next step, per chunk
  bool timeline_next_ = false;
  std::string timeline_text_;
  std::vector<int> compute_span_;  // open forward/backward span of each chunk
  Buffer device_scalars_, host_scalars_;
  Buffer sum_partials_;  // GPU: sum_squares_flag's partials on the communication stream
  Buffer host_losses_;
  float last_loss_scale_ = 0.0f;
  // The CPU AdamW of the offloaded chunks, running on worker_ past the end
  // of train_step (start_cpu_updates), and what it reads besides the chunk
  // buffers: the step's hyper-parameters and scalars, copied so that the
  // next step may overwrite host_scalars_.
  struct PendingUpdate {
    k::AdamWHyper hp;
    float factor = 1.0f, flag = 0.0f;
    bool in_timeline = false;  // started while the timeline was recording
    std::vector<std::chrono::steady_clock::time_point> begin, end;  // per chunk, taken by the worker
  } pending_;
  std::vector<int> update_order_;     // the chunks of the last start_cpu_updates, in update order
  std::vector<char> update_pending_;  // per chunk: updated or being updated, not yet collected
  OrderedWorker worker_;  // last: destroyed first, it waits for its task before the buffers go
};

}  // namespace

std::unique_ptr<Plugin> make_gemini(const PluginOptions& opts, const model::ViTConfig& cfg,
                                    const model::ComputeConfig& compute, int max_micro_batch, const PluginEnv& env) {
  return std::make_unique<GeminiPlugin>(opts, cfg, compute, max_micro_batch, env);
}

}  // namespace vit::parallel
