#include "parallel/hybrid_parallel.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iterator>

#include "comm/communicator.h"
#include "comm/process_mesh.h"
#include "core/device.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/stream.h"
#include "kernels/cast.h"
#include "model/vit.h"
#include "parallel/batch_stager.h"
#include "parallel/bucket_layout.h"
#include "parallel/grad_buckets.h"
#include "parallel/param_groups.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/step_finisher.h"
#include "parallel/tensor_parallel.h"

namespace vit::parallel {

namespace k = vit::kernels;

namespace {

using Clock = std::chrono::steady_clock;

// Checks the options against the mesh before anything is built from them;
// returns the number of pipeline micro-batches per trainer micro-batch.
int checked_microbatches(const PluginOptions& opts, const model::ViTConfig& cfg, const comm::ProcessMesh* mesh,
                         int max_micro_batch) {
  VIT_CHECK(mesh != nullptr && mesh->has_communicators(), "hybrid_parallel needs a process mesh with communicators");
  const HybridOptions& h = opts.hybrid;
  VIT_CHECK(mesh->tp_size() == h.tp_size && mesh->pp_size() == h.pp_size, "hybrid_parallel: plugin.tp_size ",
            h.tp_size, " / plugin.pp_size ", h.pp_size, " differ from the process mesh's tp ", mesh->tp_size(),
            " x pp ", mesh->pp_size());
  VIT_CHECK(h.zero_stage == 0 || h.zero_stage == 1, "hybrid_parallel: plugin.zero_stage ", h.zero_stage,
            " (allowed: 0, 1)");
  VIT_CHECK(h.num_microbatches >= 1 && max_micro_batch % h.num_microbatches == 0, "hybrid_parallel: ",
            h.num_microbatches, " micro-batches do not divide the batch of ", max_micro_batch);
  VIT_CHECK(cfg.depth % h.pp_size == 0, "hybrid_parallel: ", h.pp_size, " stages do not divide depth ", cfg.depth);
  return h.num_microbatches;
}

// One pipeline micro-batch: a slice of one of the trainer's micro-batches,
// with the slice of its training extras (plugin.h MicroBatch).
struct Chunk {
  const uint8_t* images = nullptr;    // (B, H, W, 3)
  const int32_t* labels = nullptr;    // (B), host
  const int32_t* labels_b = nullptr;  // (B), host: mixup/cutmix second labels; null: none
  const float* mix_lambda = nullptr;  // (B), host: the share of `labels`; given with labels_b
  int count = 0;                      // B
  bool on_device = false;
  uint64_t noise_key = 0;             // the trainer micro-batch's: masks are keyed by it and the sample position
  int64_t first_sample = 0;           // position of image 0 of this slice in the step's global batch
};

// Sets the model's training flag for a scope (train_step) and restores it,
// also when the step throws.
class TrainingScope {
 public:
  explicit TrainingScope(model::ViTModel& m) : model_(m), saved_(m.training()) { model_.set_training(true); }
  ~TrainingScope() { model_.set_training(saved_); }
  TrainingScope(const TrainingScope&) = delete;
  TrainingScope& operator=(const TrainingScope&) = delete;

 private:
  model::ViTModel& model_;
  bool saved_;
};

class HybridParallelPlugin final : public HybridParallel, private model::ParamSource {
 public:
  HybridParallelPlugin(const PluginOptions& opts, const model::ViTConfig& cfg, const model::ComputeConfig& compute,
                       int max_micro_batch, const PluginEnv& env)
      : opts_(opts),
        ctx_(env.ctx),
        micro_(checked_microbatches(opts, cfg, env.mesh, max_micro_batch)),
        max_micro_batch_(max_micro_batch),
        mesh_(*env.mesh),
        tp_(mesh_.tp_comm()),
        pp_(mesh_.pp_comm()),
        dp_(mesh_.dp_comm()),
        world_(mesh_.world_comm()),
        sharded_(opts.hybrid.zero_stage == 1),
        first_(mesh_.is_first_stage()),
        last_(mesh_.is_last_stage()),
        model_(cfg, compute, env.ctx, max_micro_batch / micro_,
               model::ShardSpec::stage(cfg, mesh_.pp_size(), mesh_.pp_rank(), mesh_.tp_size(), mesh_.tp_rank()),
               pipeline_slots(mesh_.pp_size(), mesh_.pp_rank(), micro_)),
        tp_group_(tp_, env.ctx),
        full_layout_(cfg),
        buckets_(model_.layout(), opts.bucket_bytes, dp_.size(), dp_.rank()),
        grads_(buckets_, dp_, env.ctx, GradReduction::AllReduce, opts.overlap_comm, 3, opts.reduce_dtype),
        stager_(cfg, env.ctx, max_micro_batch / micro_),
        finisher_(env.ctx, opts.optimizer(), &world_),
        image_bytes_(static_cast<size_t>(cfg.image_size) * cfg.image_size * cfg.channels) {
    const Device dev = ctx_.device;
    const DType cd = model_.compute().dtype;
    const int64_t P = buckets_.padded_total();
    const int64_t S = sharded_ ? buckets_.shard_total() : P;
    params_ = Buffer(static_cast<size_t>(P) * dtype_size(cd), dev);
    if (sharded_ || cd != DType::F32) master_ = Buffer(static_cast<size_t>(S) * 4, dev);
    m_ = Buffer(static_cast<size_t>(S) * 4, dev);
    v_ = Buffer(static_cast<size_t>(S) * 4, dev);
    m_.zero();
    v_.zero();
    params_.zero();
    if (!master_.empty()) master_.zero();
    labels_ = Buffer(static_cast<size_t>(max_micro_batch / micro_) * sizeof(int32_t), dev);
    for (const auto& p : model_.layout().params()) padded_offset_.push_back(buckets_.padded_offset(p.offset));
    if (sharded_) gather_ = std::make_unique<ParamGather>(buckets_, dp_, ctx_, params_tensor());
    build_views();
    finisher_.set_norm_grads(norm_grads());
    model_.set_param_source(this);
    model_.set_tensor_parallel(&tp_group_);
    stats_.stage = mesh_.pp_rank();
    stats_.stages = mesh_.pp_size();
    stats_.slots = model_.slots();
  }

  std::string name() const override { return opts_.name; }

  std::vector<std::string> notes() const override {
    std::vector<std::string> out;
    if (!model_.attention_note().empty()) out.push_back(str_cat("attention: ", model_.attention_note()));
    const model::ParamLayout& L = model_.layout();
    out.push_back(str_cat("hybrid_parallel: tp ", mesh_.tp_size(), " x pp ", mesh_.pp_size(), " x dp ",
                          mesh_.dp_size(), "; rank ", mesh_.rank(), " (stage ", mesh_.pp_rank(), ", tp rank ",
                          mesh_.tp_rank(), ") holds ", first_ ? "the embeddings, " : "", "blocks ", L.first_block(),
                          "-", L.end_block() - 1, last_ ? ", the head" : "", " (", L.total(), " of ",
                          full_layout_.total(), " parameters); ", micro_, " pipeline micro-batch(es) of ",
                          max_micro_batch_ / micro_, " images per micro-batch (1F1B)",
                          sharded_ ? "; ZeRO-1 shards the optimizer state over the dp group" : ""));
    return out;
  }

  std::string variant() const override {
    std::string v = str_cat("tp", mesh_.tp_size(), " pp", mesh_.pp_size());
    if (mesh_.pp_size() > 1) v += str_cat(" mb", micro_);
    if (sharded_) v += " zero1";
    return v;
  }

  int data_parallel_size() const override { return dp_.size(); }
  int data_parallel_rank() const override { return dp_.rank(); }

  size_t optimizer_state_bytes() const override {
    return m_.bytes() + v_.bytes() + (master_.empty() ? params_.bytes() : master_.bytes());
  }

  PipelineStats pipeline_stats() const override {
    PipelineStats s = stats_;
    s.tp_reductions = tp_group_.calls();
    return s;
  }
  void set_timing(bool on) override { timing_ = on; }
  const model::ParamLayout& local_layout() const override { return model_.layout(); }

  // Every rank swaps the views it updates (tp ranks hold identical averages
  // of replicated tensors: their weights are identical); with ZeRO-1 the
  // other dp ranks' parts come by the all-gather, as after a step.
  void swap_ema() override {
    settle();
    finisher_.swap_ema(views_);
    if (gather_) gather_->launch();
    settle();
  }

  void load_params(const std::vector<float>& full) override {
    VIT_CHECK(static_cast<int64_t>(full.size()) == full_layout_.total(), "load_params: ", full.size(),
              " values for a model of ", full_layout_.total());
    settle();
    const model::ParamLayout& L = model_.layout();
    const int64_t P = buckets_.padded_total();
    std::vector<float> local(static_cast<size_t>(L.total()));
    L.extract_local(full.data(), local.data());
    std::vector<float> padded(static_cast<size_t>(P));
    buckets_.pad(local.data(), padded.data());
    Buffer staged(static_cast<size_t>(P) * 4, ctx_.device);
    copy_bytes(staged.data(), ctx_.device, padded.data(), Device::CPU, staged.bytes());
    Tensor all = tensor_of(staged, DType::F32, {P});
    k::cast(ctx_, params_tensor(), all);  // fp32 -> compute dtype (a copy for fp32)
    if (!master_.empty()) {
      if (!sharded_) {
        k::cast(ctx_, tensor_of(master_, DType::F32, {P}), all);
      } else {
        for (size_t b = 0; b < buckets_.buckets().size(); ++b) {
          const int bi = static_cast<int>(b);
          const int64_t part = buckets_.part_size(bi);
          k::cast(ctx_, Tensor(master_.as<float>() + buckets_.buckets()[b].shard_offset, DType::F32, ctx_.device, {part}),
                  Tensor(staged.as<float>() + buckets_.part_begin(bi), DType::F32, ctx_.device, {part}));
        }
      }
    }
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
    return assemble(padded, 1.0);
  }

  std::vector<float> gather_grads() override {
    VIT_CHECK(last_loss_scale_ > 0.0f, "gather_grads: no train_step has run yet");
    settle();
    return assemble(reduced_grads_host(), 1.0 / static_cast<double>(last_loss_scale_));
  }

  std::vector<float> local_grads() override {
    VIT_CHECK(last_loss_scale_ > 0.0f, "local_grads: no train_step has run yet");
    settle();
    const std::vector<float> padded = reduced_grads_host();
    std::vector<float> out(static_cast<size_t>(model_.layout().total()));
    buckets_.unpad(padded.data(), out.data());
    const double inv = 1.0 / static_cast<double>(last_loss_scale_);
    for (float& g : out) g = static_cast<float>(g * inv);
    return out;
  }

  // Checkpoints, in full-tensor coordinates (plugin.h). Every element of
  // this rank's state maps to (tensor, element of the full tensor) through
  // its tp slice (ParamLayout::slice_runs); a pipeline stage names only the
  // tensors it holds. Writing: of the dp replicas of an element, the dp
  // rank holding it in its state (ZeRO-1: the owner of its bucket part;
  // replicated over dp: dp rank 0), and of a tp-replicated tensor (LayerNorms,
  // biases of row-parallel layers, embeddings, head) tp rank 0 only, so that
  // the ranks' runs cover every element once. Reading: everything this rank
  // keeps state for, replicated copies included.
  std::vector<TensorRun> state_runs() const override {
    std::vector<TensorRun> runs;
    for (const PlacedRun& r : placed_runs(true)) runs.push_back(r.run);
    return runs;
  }

  std::vector<StatePart> state_parts() const override {
    return state_parts_with(finisher_.has_ema());
  }

  std::vector<float> export_state(StatePart part) override {
    settle();
    std::vector<float> state(static_cast<size_t>(state_elements()));
    if (part == StatePart::Ema) {
      // The average lives per view in the StepFinisher: laid out as the
      // master weights are (state_buffer), then read through the same runs.
      VIT_CHECK(finisher_.has_ema(), opts_.name, ": export_state(ema) without a weight average (ema_decay is 0)");
      state = finisher_.export_ema_to_host(views_, state_buffer(StatePart::Master), static_cast<int64_t>(state.size()));
    } else {
      copy_bytes(state.data(), Device::CPU, state_buffer(part), ctx_.device, state.size() * sizeof(float));
    }
    std::vector<float> out;
    for (const PlacedRun& r : placed_runs(true)) {
      out.insert(out.end(), state.begin() + r.at, state.begin() + r.at + r.run.count);
    }
    return out;
  }

  void import_state(const StateReader& read, bool has_ema) override {
    settle();
    const std::vector<PlacedRun> runs = placed_runs(false);
    std::vector<float> host(static_cast<size_t>(state_elements()));
    const bool ema = finisher_.has_ema() && has_ema;  // a checkpoint's average without ema_decay is not read
    const std::vector<StatePart> parts = state_parts_with(ema);
    for (StatePart part : parts) {
      std::fill(host.begin(), host.end(), 0.0f);  // padding stays zero, as AdamW keeps it
      for (const PlacedRun& r : runs) read(part, r.run, host.data() + r.at);
      if (part == StatePart::Ema) {  // same layout as the master weights; the StepFinisher takes it per view
        finisher_.import_ema_from_host(views_, state_buffer(StatePart::Master), host);
        continue;
      }
      copy_bytes(const_cast<float*>(state_buffer(part)), ctx_.device, host.data(), Device::CPU,
                 host.size() * sizeof(float));
    }
    // No average in the checkpoint (an older one, or written with ema_decay
    // 0): it starts afresh from the imported weights at the next step.
    if (!ema) finisher_.reset_ema();
    // The compute-dtype copy the model reads, from the master weights: whole
    // (replicated over dp; the same buffer for fp32) or this rank's parts,
    // then all-gathered over the dp group as after a step (ZeRO-1).
    if (!sharded_) {
      if (!master_.empty()) k::cast(ctx_, params_tensor(), tensor_of(master_, DType::F32, {buckets_.padded_total()}));
    } else {
      const DType cd = model_.compute().dtype;
      for (size_t b = 0; b < buckets_.buckets().size(); ++b) {
        const int bi = static_cast<int>(b);
        const int64_t part = buckets_.part_size(bi);
        k::cast(ctx_,
                Tensor(static_cast<char*>(params_.data()) + buckets_.part_begin(bi) * static_cast<int64_t>(dtype_size(cd)),
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
    const auto t0 = Clock::now();
    step_t0_ = t0;
    grads_.begin_step();
    // The loss gradient is scaled by 1/global batch (a mean over every
    // data-parallel rank's images) and by the fp16 loss scale: the reductions sum.
    const float grad_scale = loss_scale / static_cast<float>(global_count);
    size_t images = 0;
    for (const MicroBatch& mb : micro) images += static_cast<size_t>(mb.count);
    if (last_ && host_losses_.bytes() < images * 4) host_losses_ = Buffer(images * 4, Device::CPU, HostMemory::Pinned);
    filled_ = 0;
    const int64_t tp_calls = stats_.tp_reductions;
    stats_ = PipelineStats();
    stats_.stage = mesh_.pp_rank();
    stats_.stages = mesh_.pp_size();
    stats_.slots = model_.slots();
    stats_.tp_reductions = tp_calls;
    // The stage functions regularise (drop path, dropout, soft targets and
    // label smoothing) only while the model is training.
    const TrainingScope training(model_);
    // Gradient accumulation: each of the trainer's micro-batches is one 1F1B
    // round over its pipeline micro-batches; buckets reduce in the last round.
    for (size_t a = 0; a < micro.size(); ++a) {
      const bool last_round = a + 1 == micro.size();
      std::vector<Chunk> chunks = chunks_of(micro[a]);
      if (chunks.empty()) {
        grads_.skip_micro(last_round);  // still joins every reduction
        continue;
      }
      // A micro-batch without a noise key (benchmark mode, tests) gets one
      // from a counter, as ViTModel::forward_backward draws it for the
      // data-parallel plugins: every rank of this plugin counts alike.
      if (micro[a].noise_key == 0 && model_.compute().reg.any_noise()) {
        const uint64_t key = mix_seed(model_.compute().reg.seed, 0x6e6f697365ull, ++auto_noise_);
        for (Chunk& c : chunks) c.noise_key = key;
      }
      run_one_f_one_b(chunks, grad_scale, last_round);
    }
    grads_.finish();
    finisher_.finish(views_, lr, loss_scale, adam_step);
    if (gather_) {
      gather_->launch();
      if (!opts_.overlap_comm) gather_->wait_all();
    }
    // One host synchronisation per step, after all its work is queued.
    finisher_.read_back();
    synchronize_stream(ctx_.stream);
    last_loss_scale_ = loss_scale;
    // The losses live on the last stage; its tp rank 0 speaks for the tp group.
    double local_loss = 0.0;
    if (counts_outputs()) {
      for (size_t i = 0; i < filled_; ++i) local_loss += host_losses_.as<float>()[i];
    }
    float loss_sum = static_cast<float>(local_loss);
    world_.all_reduce(&loss_sum, 1, DType::F32, comm::ReduceOp::Sum, Device::CPU);
    stats_.step_s = std::chrono::duration<double>(Clock::now() - t0).count();
    StepResult r;
    r.loss = loss_sum / static_cast<double>(global_count);
    r.grad_norm = finisher_.grad_norm();
    r.skipped = finisher_.skipped();
    return r;
  }

  EvalResult eval_batch(const MicroBatch& mb) override {
    EvalResult r;
    if (mb.count == 0) return r;
    const std::vector<Chunk> chunks = chunks_of(mb);
    const size_t n = static_cast<size_t>(mb.count);
    if (last_ && host_eval_losses_.bytes() < n * 4) {
      host_eval_losses_ = Buffer(n * 4, Device::CPU, HostMemory::Pinned);
      host_eval_pred_ = Buffer(n * 4, Device::CPU, HostMemory::Pinned);
    }
    size_t at = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const Chunk& c = chunks[i];
      const int slot = static_cast<int>(i) % model_.slots();
      if (!first_) recv_from(mesh_.pp_rank() - 1, input(c.count, slot));
      forward_step(c, slot, 1.0f, false);
      if (!last_) send_to(mesh_.pp_rank() + 1, output(c.count, slot));
      if (last_) {
        // The slot is reused by a later chunk: its results go to the host now (stream order).
        copy_bytes_async(host_eval_losses_.as<float>() + at, model_.losses(c.count, slot).data,
                         static_cast<size_t>(c.count) * 4, ctx_.stream);
        copy_bytes_async(host_eval_pred_.as<int32_t>() + at, model_.predicted(c.count, slot).data,
                         static_cast<size_t>(c.count) * 4, ctx_.stream);
      }
      at += static_cast<size_t>(c.count);
    }
    synchronize_stream(ctx_.stream);
    if (!last_) return r;  // this stage saw no outputs (all_reduce_eval adds the last stage's)
    for (size_t i = 0; i < n; ++i) {
      r.loss_sum += host_eval_losses_.as<float>()[i];
      r.correct += host_eval_pred_.as<int32_t>()[i] == mb.labels[i];
    }
    r.count = mb.count;
    return r;
  }

  EvalResult all_reduce_eval(const EvalResult& local) override {
    // Each evaluated image counted once: by tp rank 0 of the last stage of
    // its data-parallel replica. Counts stay exact in fp32 up to 2^24.
    const bool mine = counts_outputs();
    float v[3] = {mine ? static_cast<float>(local.loss_sum) : 0.0f, mine ? static_cast<float>(local.correct) : 0.0f,
                  mine ? static_cast<float>(local.count) : 0.0f};
    world_.all_reduce(v, 3, DType::F32, comm::ReduceOp::Sum, Device::CPU);
    return EvalResult{v[0], static_cast<int64_t>(v[1] + 0.5f), static_cast<int64_t>(v[2] + 0.5f)};
  }

 private:
  // ---- model::ParamSource: views into the padded buffers; bucket bookkeeping.
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

  // ---- The pipeline.
  bool counts_outputs() const { return last_ && mesh_.tp_rank() == 0; }

  // A trainer micro-batch cut into micro_ pipeline micro-batches (sizes
  // differ by at most one; empty ones left out). Every stage of a pipeline
  // gets the same trainer micro-batch, so all cut it alike.
  std::vector<Chunk> chunks_of(const MicroBatch& mb) const {
    VIT_CHECK(mb.count >= 0 && mb.count <= max_micro_batch_, "micro-batch of ", mb.count,
              " images; the plugin was built for ", max_micro_batch_);
    std::vector<Chunk> out;
    int at = 0;
    for (int j = 0; j < micro_; ++j) {
      const int n = mb.count / micro_ + (j < mb.count % micro_ ? 1 : 0);
      if (n == 0) continue;
      Chunk c;
      c.images = mb.images ? mb.images + static_cast<size_t>(at) * image_bytes_ : nullptr;
      c.labels = mb.labels + at;
      VIT_CHECK((mb.labels_b == nullptr) == (mb.mix_lambda == nullptr),
                "micro-batch: labels_b and mix_lambda come together (one is given, the other not)");
      if (mb.labels_b != nullptr) {
        c.labels_b = mb.labels_b + at;
        c.mix_lambda = mb.mix_lambda + at;
      }
      c.count = n;
      c.on_device = mb.on_device;
      // Every rank of the pipeline and of the tp group cuts alike and keys
      // the masks by the same (noise key, global position): the same masks.
      c.noise_key = mb.noise_key;
      c.first_sample = mb.first_sample + at;
      out.push_back(c);
      at += n;
    }
    return out;
  }

  // This stage's input (received from the previous stage) and output (sent
  // to the next) of a micro-batch in `slot`: the residual stream.
  Tensor input(int B, int slot) const { return model_.residual(model_.layout().first_block(), B, slot); }
  Tensor output(int B, int slot) const { return model_.residual(model_.layout().end_block(), B, slot); }

  // Point to point inside the pipeline group (peers are pp ranks).
  void send_to(int peer, const Tensor& t) {
    pp_.send(t.data, static_cast<size_t>(t.numel()), t.dtype, peer, ctx_.device, ctx_.stream);
  }
  void recv_from(int peer, const Tensor& t) {
    pp_.recv(t.data, static_cast<size_t>(t.numel()), t.dtype, peer, ctx_.device, ctx_.stream);
  }
  void exchange(int peer, const Tensor& out, const Tensor& in) {
    pp_.send_recv(out.data, static_cast<size_t>(out.numel()), peer, in.data, static_cast<size_t>(in.numel()), peer,
                  out.dtype, ctx_.device, ctx_.stream);
  }

  // Training: the chunk's extras go to the model's slot before its forward,
  // on every stage: the noise key and sample position key the masks of this
  // stage's blocks (block l of the whole model, so drop path's rate grows
  // over the whole depth), the embeddings' dropout on the first stage; the
  // second labels and their shares reach the last stage's loss.
  void forward_step(const Chunk& c, int slot, float grad_scale, bool train) {
    const int B = c.count;
    Tensor images, labels;
    model::TrainExtras extras;
    extras.noise_key = c.noise_key;
    extras.first_sample = c.first_sample;
    if (first_) {
      MicroBatch mb;
      mb.images = c.images;
      mb.labels = c.labels;
      mb.count = B;
      mb.on_device = c.on_device;
      if (train) {
        mb.labels_b = c.labels_b;
        mb.mix_lambda = c.mix_lambda;
        mb.noise_key = c.noise_key;
        mb.first_sample = c.first_sample;
      }
      stager_.stage(mb, &images, &labels);
      extras = stager_.extras();  // on the device until the next stage(): after this chunk's head_forward
    } else if (last_ && train && c.labels_b != nullptr) {
      // Consumed by head_forward below, in stream order before the next chunk's copy.
      if (labels_b_.empty()) {
        labels_b_ = Buffer(labels_.bytes(), ctx_.device);
        lambda_ = Buffer(labels_.bytes(), ctx_.device);
      }
      copy_bytes_async(labels_b_.data(), c.labels_b, static_cast<size_t>(B) * sizeof(int32_t), ctx_.stream);
      copy_bytes_async(lambda_.data(), c.mix_lambda, static_cast<size_t>(B) * sizeof(float), ctx_.stream);
      extras.labels_b = Tensor(labels_b_.data(), DType::I32, ctx_.device, {B});
      extras.lambda = Tensor(lambda_.data(), DType::F32, ctx_.device, {B});
    }
    if (train) model_.set_train_extras(extras, slot);
    if (first_) model_.embed_forward(images, B, slot);
    const model::ParamLayout& L = model_.layout();
    for (int l = L.first_block(); l < L.end_block(); ++l) model_.block_forward(l, B, slot);
    if (!last_) return;
    if (!first_) {
      copy_bytes_async(labels_.data(), c.labels, static_cast<size_t>(B) * sizeof(int32_t), ctx_.stream);
      labels = Tensor(labels_.data(), DType::I32, ctx_.device, {B});
    }
    model_.head_forward(labels, B, grad_scale, train, slot);
    if (train) {
      copy_bytes_async(host_losses_.as<float>() + filled_, model_.losses(B, slot).data, static_cast<size_t>(B) * 4,
                       ctx_.stream);
      filled_ += static_cast<size_t>(B);
    }
  }

  // `last_of_step`: the step's final backward, where the buckets reduce.
  void backward_step(const Chunk& c, int slot, bool last_of_step) {
    const int B = c.count;
    grads_.begin_micro(last_of_step);
    if (last_) model_.head_backward(B, slot);
    const model::ParamLayout& L = model_.layout();
    for (int l = L.end_block() - 1; l >= L.first_block(); --l) model_.block_backward(l, B, slot);
    if (first_) model_.embed_backward(B, slot);
  }

  void run_one_f_one_b(const std::vector<Chunk>& chunks, float grad_scale, bool last_round) {
    const int M = static_cast<int>(chunks.size());
    const int prev = mesh_.pp_rank() - 1, next = mesh_.pp_rank() + 1;
    const int slots = model_.slots();
    auto slot_of = [&](int i) { return i % slots; };
    auto count_of = [&](int i) { return chunks[static_cast<size_t>(i)].count; };
    int alive = 0;
    if (timing_) synchronize_stream(ctx_.stream);  // the clock starts with an idle GPU
    for (const PipeAction& a : one_f_one_b(mesh_.pp_size(), mesh_.pp_rank(), M)) {
      const auto t0 = Clock::now();
      double* bucket = &stats_.recv_s;
      switch (a.op) {
        case PipeAction::RecvForward:
          recv_from(prev, input(count_of(a.micro), slot_of(a.micro)));
          break;
        case PipeAction::Forward:
          // Its slot must not hold a micro-batch still waiting for backward.
          VIT_CHECK(alive < slots, "pipeline stage ", mesh_.pp_rank(), ": micro-batch ", a.micro, " would be the ",
                    alive + 1, "th alive with ", slots, " activation slots (", pipe_phase_name(a.phase), ")");
          forward_step(chunks[static_cast<size_t>(a.micro)], slot_of(a.micro), grad_scale, true);
          stats_.max_in_flight = std::max(stats_.max_in_flight, ++alive);
          ++stats_.micro_batches;
          bucket = &stats_.forward_s;
          break;
        case PipeAction::SendForward:
          send_to(next, output(count_of(a.micro), slot_of(a.micro)));
          bucket = &stats_.send_s;
          break;
        case PipeAction::SendForwardRecvBackward:
          exchange(next, output(count_of(a.micro), slot_of(a.micro)), model_.residual_grad(count_of(a.other)));
          break;
        case PipeAction::RecvBackward:
          recv_from(next, model_.residual_grad(count_of(a.micro)));
          break;
        case PipeAction::Backward:
          backward_step(chunks[static_cast<size_t>(a.micro)], slot_of(a.micro), last_round && a.micro == M - 1);
          --alive;
          bucket = &stats_.backward_s;
          break;
        case PipeAction::SendBackward:
          send_to(prev, model_.residual_grad(count_of(a.micro)));
          bucket = &stats_.send_s;
          break;
        case PipeAction::SendBackwardRecvForward:
          exchange(prev, model_.residual_grad(count_of(a.micro)), input(count_of(a.other), slot_of(a.other)));
          break;
      }
      if (timing_) synchronize_stream(ctx_.stream);
      const auto t1 = Clock::now();
      *bucket += std::chrono::duration<double>(t1 - t0).count();
      if (timing_) {
        stats_.events.push_back(PipeEvent{static_cast<int>(a.op), a.micro,
                                          std::chrono::duration<double>(t0 - step_t0_).count(),
                                          std::chrono::duration<double>(t1 - step_t0_).count()});
      }
    }
    VIT_CHECK(alive == 0, "pipeline stage ", mesh_.pp_rank(), ": ", alive, " micro-batches left without backward");
  }

  // ---- Buffers, views, assembly.
  Tensor params_tensor() const { return tensor_of(params_, model_.compute().dtype, {buckets_.padded_total()}); }

  // The parts this rank updates (StepFinisher): everything when replicated
  // over dp, its part of every bucket with ZeRO-1; split at parameter
  // boundaries when parameters differ in lr or weight decay (param_groups.h).
  // The local layout names each tensor by its full-model name and block
  // index ("blocks.3.mlp.fc1.weight" on any stage, for its tp slice), so a
  // slice, a stage-local parameter and a ZeRO-1 part get the multipliers of
  // their full-model parameter.
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
      const int bi = static_cast<int>(b);
      const int64_t part = buckets_.part_size(bi);
      const int64_t off = buckets_.buckets()[b].shard_offset;
      ShardView v;
      v.master = Tensor(master_.as<float>() + off, DType::F32, dev, {part});
      v.m = Tensor(m_.as<float>() + off, DType::F32, dev, {part});
      v.v = Tensor(v_.as<float>() + off, DType::F32, dev, {part});
      v.grad = grads_.reduced_part(bi);
      v.lowp = Tensor(static_cast<char*>(params_.data()) + buckets_.part_begin(bi) * static_cast<int64_t>(dtype_size(cd)),
                      cd, dev, {part});
      views_.push_back(v);
      begins->push_back(buckets_.part_begin(bi));
    }
  }

  // Runs of the reduced gradient (padded places) whose squares this rank
  // adds to the global norm, so that over the world every gradient value
  // counts once: tp-split parameters on every tp rank, replicated ones on tp
  // rank 0; this rank's part of each bucket with ZeRO-1, the whole on dp
  // rank 0 without. Runs stop at bucket ends and at parameters left out.
  std::vector<Tensor> norm_grads() const {
    std::vector<Tensor> out;
    if (!sharded_ && dp_.rank() != 0) return out;
    const model::ParamLayout& L = model_.layout();
    float* base = grads_.reduced().f32();
    for (size_t b = 0; b < buckets_.buckets().size(); ++b) {
      const Bucket& bk = buckets_.buckets()[b];
      const int bi = static_cast<int>(b);
      const int64_t lo = sharded_ ? buckets_.part_begin(bi) : bk.padded_begin;
      const int64_t hi = sharded_ ? lo + buckets_.part_size(bi) : bk.padded_begin + bk.padded_size;
      int64_t run_begin = -1, run_end = -1;
      auto close = [&] {
        if (run_begin >= 0 && run_end > run_begin) {
          out.emplace_back(base + run_begin, DType::F32, ctx_.device, std::initializer_list<int64_t>{run_end - run_begin});
        }
        run_begin = run_end = -1;
      };
      for (size_t i = 0; i < L.params().size(); ++i) {
        const model::ParamInfo& p = L.params()[i];
        if (p.offset < bk.begin || p.offset >= bk.end) continue;
        const int64_t a = std::max(lo, padded_offset_[i]), e = std::min(hi, padded_offset_[i] + p.numel);
        if (a >= e) continue;
        const bool counted = p.split != model::TpSplit::Replicated || mesh_.tp_rank() == 0;
        if (!counted) {
          close();
        } else if (run_begin >= 0 && run_end == a) {
          run_end = e;
        } else {
          close();
          run_begin = a;
          run_end = e;
        }
      }
      close();
    }
    return out;
  }

  // ---- Checkpoint runs.
  // A run of a full tensor and where its first element lives in this rank's
  // state buffers (state_buffer(): padded whole, or the ZeRO-1 shard).
  struct PlacedRun {
    TensorRun run;
    int64_t at = 0;
  };

  // Elements of each state buffer: the padded whole, or the ZeRO-1 shard.
  int64_t state_elements() const { return sharded_ ? buckets_.shard_total() : buckets_.padded_total(); }

  // The fp32 buffer holding `part`; fp32 without ZeRO keeps its master weights in params_.
  const float* state_buffer(StatePart part) const {
    switch (part) {
      case StatePart::Master: return (master_.empty() ? params_ : master_).as<float>();
      case StatePart::AdamM: return m_.as<float>();
      case StatePart::AdamV: return v_.as<float>();
      case StatePart::Ema: break;
    }
    VIT_THROW(opts_.name, ": no state buffer for part ", state_part_name(part),
              " (the weight average lives per view in the StepFinisher)");
  }

  // The runs of the local elements this rank keeps state for, in buffer
  // order: every bucket whole (replicated over dp) or its own part of each
  // (ZeRO-1), real elements only. `writing`: only those this rank writes
  // (dp rank 0 without ZeRO; tp-replicated tensors on tp rank 0 only).
  std::vector<PlacedRun> placed_runs(bool writing) const {
    std::vector<PlacedRun> out;
    if (writing && !sharded_ && dp_.rank() != 0) return out;
    const model::ParamLayout& L = model_.layout();
    for (size_t b = 0; b < buckets_.buckets().size(); ++b) {
      const Bucket& bk = buckets_.buckets()[b];
      // Local elements [lo, hi) kept here, and where lo lives in the state buffers.
      int64_t lo = bk.begin, hi = bk.end, at = bk.padded_begin;
      if (sharded_) {
        const int64_t ps = buckets_.part_size(static_cast<int>(b)), real = bk.end - bk.begin;
        lo = bk.begin + std::min(real, dp_.rank() * ps);
        hi = bk.begin + std::min(real, (dp_.rank() + 1) * ps);
        at = bk.shard_offset;
      }
      for (size_t i = 0; i < L.params().size(); ++i) {
        const model::ParamInfo& p = L.params()[i];
        const int64_t a = std::max(lo, p.offset), e = std::min(hi, p.offset + p.numel);
        if (a >= e) continue;
        if (writing && p.split == model::TpSplit::Replicated && mesh_.tp_rank() != 0) continue;
        // The slice's runs overlapping the tensor's local elements [a, e).
        for (const model::ParamLayout::SliceRun& s : L.slice_runs(static_cast<int>(i))) {
          const int64_t sa = std::max(a - p.offset, s.local), se = std::min(e - p.offset, s.local + s.count);
          if (sa >= se) continue;
          out.push_back(PlacedRun{TensorRun{p.name, s.full + (sa - s.local), se - sa}, at + (p.offset + sa - lo)});
        }
      }
    }
    return out;
  }

  // Every queued gather and update has landed (before host reads or writes).
  void settle() {
    if (gather_) gather_->wait_all();
    synchronize_stream(ctx_.stream);
  }

  std::vector<float> reduced_grads_host() const {
    std::vector<float> padded(static_cast<size_t>(buckets_.padded_total()));
    copy_bytes(padded.data(), Device::CPU, grads_.reduced().data, ctx_.device, padded.size() * 4);
    return padded;
  }

  // Shards (shard_total fp32 on the device, this rank's parts) -> the whole
  // padded vector of this rank's layout on the host, by an all-gather per
  // bucket over the dp group. Collective.
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

  // This rank's padded vector -> the full vector of the unsharded model on
  // every rank, times `scale`: one contributor per element (dp rank 0; for
  // replicated parameters tp rank 0), the rest add zeros. Collective (world).
  std::vector<float> assemble(const std::vector<float>& padded, double scale) {
    const model::ParamLayout& L = model_.layout();
    std::vector<float> local(static_cast<size_t>(L.total()));
    buckets_.unpad(padded.data(), local.data());
    std::vector<float> full(static_cast<size_t>(full_layout_.total()), 0.0f);
    if (dp_.rank() == 0) {
      for (size_t i = 0; i < L.params().size(); ++i) {
        const model::ParamInfo& p = L.params()[i];
        if (p.split == model::TpSplit::Replicated && mesh_.tp_rank() != 0) continue;
        L.place_slice(static_cast<int>(i), local.data() + p.offset,
                      full.data() + full_layout_[p.global_index].offset);
      }
    }
    world_.all_reduce(full.data(), full.size(), DType::F32, comm::ReduceOp::Sum, Device::CPU);
    if (scale != 1.0) {
      for (float& g : full) g = static_cast<float>(g * scale);
    }
    return full;
  }

  PluginOptions opts_;
  Context ctx_;
  int micro_;             // pipeline micro-batches per trainer micro-batch
  int max_micro_batch_;   // images of a trainer micro-batch
  comm::ProcessMesh& mesh_;
  comm::Communicator &tp_, &pp_, &dp_, &world_;
  bool sharded_;          // ZeRO-1 over the dp group
  bool first_, last_;     // pipeline stage
  model::ViTModel model_;
  TensorParallelGroup tp_group_;
  model::ParamLayout full_layout_;  // the unsharded layout (load, gather)
  BucketLayout buckets_;
  GradBuckets grads_;
  BatchStager stager_;
  StepFinisher finisher_;
  size_t image_bytes_;
  std::unique_ptr<ParamGather> gather_;
  std::vector<int64_t> padded_offset_;
  std::vector<ShardView> views_;
  // params_: compute dtype, padded, this rank's layout (what forward reads).
  // master_: fp32 master weights (padded whole, or this rank's dp shard);
  // empty for fp32 without ZeRO, where params_ is the master.
  Buffer params_, master_, m_, v_;
  Buffer labels_;                      // device: labels of a micro-batch on a last stage that is not the first
  Buffer labels_b_, lambda_;           // device: its mixup/cutmix targets there (allocated on first use)
  Buffer host_losses_;                 // pinned: per-sample losses of the current step (last stage)
  Buffer host_eval_losses_, host_eval_pred_;
  size_t filled_ = 0;
  float last_loss_scale_ = 0.0f;
  uint64_t auto_noise_ = 0;  // micro-batches trained without a noise key
  bool timing_ = false;
  PipelineStats stats_;
  Clock::time_point step_t0_;
};

}  // namespace

std::unique_ptr<Plugin> make_hybrid_parallel(const PluginOptions& opts, const model::ViTConfig& cfg,
                                             const model::ComputeConfig& compute, int max_micro_batch,
                                             const PluginEnv& env) {
  return std::make_unique<HybridParallelPlugin>(opts, cfg, compute, max_micro_batch, env);
}

}  // namespace vit::parallel
