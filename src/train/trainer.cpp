#include "train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "comm/communicator.h"
#include "comm/watchdog.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/stream.h"
#include "kernels/blas_core.h"
#include "kernels/gpu_context.h"
#include "kernels/matmul.h"
#include "kernels/profile.h"
#include "data/loader.h"
#include "io/rank_agreement.h"
#include "model/params.h"
#include "train/checkpoint.h"
#include "train/gpu_power.h"
#include "train/hf_checkpoint.h"
#include "train/loss_scaler.h"
#include "train/progress.h"
#include "train/schedule.h"
#include "train/stop_signals.h"
#include "train/train_state.h"

namespace vit::train {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Splits this rank's share of a step into grad_accum micro-batches of at
// most batch_size images (a short last batch leaves later ones smaller or empty).
std::vector<parallel::MicroBatch> split_micro(const data::Batch& b, int batch_size, int grad_accum,
                                              size_t image_bytes) {
  std::vector<parallel::MicroBatch> micro(static_cast<size_t>(grad_accum));
  int64_t offset = 0;
  for (auto& m : micro) {
    m.count = static_cast<int>(std::clamp<int64_t>(b.count - offset, 0, batch_size));
    m.images = b.images.as<uint8_t>() + offset * static_cast<int64_t>(image_bytes);
    m.labels = b.labels.data() + offset;
    if (!b.labels_b.empty()) {
      m.labels_b = b.labels_b.data() + offset;
      m.mix_lambda = b.mix_lambda.data() + offset;
    }
    m.first_sample = offset;  // within this rank's share; the caller adds the share's start
    offset += m.count;
  }
  return micro;
}

}  // namespace

model::ViTConfig model_config(const ExperimentSpec& spec) {
  model::ViTConfig c;
  c.image_size = spec.model.image_size;
  c.patch_size = spec.model.patch_size;
  c.channels = spec.model.channels;
  c.hidden = spec.model.hidden;
  c.depth = spec.model.depth;
  c.heads = spec.model.heads;
  c.mlp_dim = spec.model.mlp_dim;
  c.num_classes = spec.model.num_classes;
  c.layernorm_eps = static_cast<float>(spec.model.layernorm_eps);
  c.init_std = static_cast<float>(spec.model.init_std);
  return c;
}

model::ComputeConfig compute_config(const ExperimentSpec& spec) {
  model::ComputeConfig c;
  c.dtype = parse_dtype(spec.plugin.precision);
  c.attention = spec.model.attention == "cublas" ? kernels::AttentionImpl::Cublas : kernels::AttentionImpl::CuDNN;
  c.recompute = spec.train.recompute;
  c.recompute_gelu = spec.train.recompute_gelu;
  c.recompute_norm = spec.train.recompute_norm;
  c.reg.drop_path = static_cast<float>(spec.model.drop_path);
  c.reg.hidden_dropout = static_cast<float>(spec.model.hidden_dropout);
  if (spec.model.pretrained_dropout) {
    c.reg.hidden_dropout = static_cast<float>(read_hf_dropout(spec.model.pretrained).hidden);
  }
  c.reg.label_smoothing = static_cast<float>(spec.train.label_smoothing);
  c.reg.seed = mix_seed(static_cast<uint64_t>(spec.run.seed), 0xd20b);
  return c;
}

void check_recipe_support(const ExperimentSpec& spec) {
  // The spec fields in use that a plugin with support `rs` does not carry.
  auto missing_of = [&](const parallel::RecipeSupport& rs) {
    std::vector<std::string> missing;
    auto need = [&](bool has, bool used, const char* field) {
      if (used && !has) missing.push_back(field);
    };
    need(rs.train_extras, spec.data.mixup_alpha > 0, "data.mixup_alpha");
    need(rs.train_extras, spec.data.cutmix_alpha > 0, "data.cutmix_alpha");
    need(rs.train_extras, spec.model.drop_path > 0, "model.drop_path");
    need(rs.train_extras, compute_config(spec).reg.hidden_dropout > 0,
         spec.model.pretrained_dropout ? "model.pretrained_dropout" : "model.hidden_dropout");
    need(rs.param_groups, spec.train.layer_decay != 1.0, "train.layer_decay");
    need(rs.param_groups, spec.train.no_decay_bias_norm, "train.no_decay_bias_norm");
    need(rs.ema, spec.train.ema_decay > 0, "train.ema_decay");
    return missing;
  };
  const std::vector<std::string> missing = missing_of(parallel::recipe_support_of(spec.plugin.name));
  if (missing.empty()) return;
  std::string fields, sets;
  for (const std::string& f : missing) fields += (fields.empty() ? "" : ", ") + f;
  for (const std::string& f : missing) {
    const bool flag = f == "train.no_decay_bias_norm" || f == "model.pretrained_dropout";
    sets += str_cat(" --set ", f, "=", flag ? "false" : f == "train.layer_decay" ? "1" : "0");
  }
  std::vector<std::string> carriers;  // the plugins (registry order) that carry every one of them
  for (const parallel::PluginEntry& e : parallel::plugin_registry()) {
    if (e.make && missing_of(e.recipe).empty()) carriers.push_back(e.name);
  }
  std::string carry;
  for (size_t i = 0; i < carriers.size(); ++i) {
    carry += (i == 0 ? "" : i + 1 == carriers.size() ? " and " : ", ") + carriers[i];
  }
  throw UserError(str_cat(spec.origin.locate(missing.front()), ": ", fields, ": plugin ", spec.plugin.name,
                          " does not carry ", missing.size() == 1 ? "this option" : "these options", " yet (",
                          carry, carriers.size() == 1 ? " carries " : " carry ", missing.size() == 1 ? "it" : "them",
                          "); turn ",
                          missing.size() == 1 ? "it" : "them", " off for ", spec.plugin.name, ":", sets));
}

parallel::PluginOptions plugin_options(const ExperimentSpec& spec) {
  parallel::PluginOptions o;
  o.name = spec.plugin.name;
  o.precision = parse_dtype(spec.plugin.precision);
  o.bucket_bytes = static_cast<size_t>(spec.plugin.bucket_mb) << 20;
  o.overlap_comm = spec.plugin.overlap_comm;
  o.reduce_dtype = parse_dtype(spec.plugin.reduce_dtype);
  o.cuda_graph = spec.plugin.cuda_graph;
  o.beta1 = static_cast<float>(spec.train.beta1);
  o.beta2 = static_cast<float>(spec.train.beta2);
  o.eps = static_cast<float>(spec.train.eps);
  o.weight_decay = static_cast<float>(spec.train.weight_decay);
  o.grad_clip = static_cast<float>(spec.train.grad_clip);
  o.ema_decay = static_cast<float>(spec.train.ema_decay);
  o.groups.layer_decay = static_cast<float>(spec.train.layer_decay);
  o.groups.no_decay_bias_norm = spec.train.no_decay_bias_norm;
  o.zero.stage = spec.plugin.stage;
  o.gemini.chunk_size_mb = spec.plugin.chunk_size_mb;
  o.gemini.offload_optim_frac = static_cast<float>(spec.plugin.offload_optim_frac);
  o.gemini.offload_param_frac = static_cast<float>(spec.plugin.offload_param_frac);
  using CpuUpdate = parallel::GeminiOptions::CpuUpdate;
  o.gemini.cpu_update = spec.plugin.cpu_update == "overlap"       ? CpuUpdate::Overlap
                        : spec.plugin.cpu_update == "synchronous" ? CpuUpdate::Synchronous
                                                                  : CpuUpdate::Auto;
  o.hybrid.tp_size = spec.plugin.tp_size;
  o.hybrid.pp_size = spec.plugin.pp_size;
  o.hybrid.num_microbatches = spec.plugin.num_microbatches;
  o.hybrid.zero_stage = spec.plugin.zero_stage;
  return o;
}

std::vector<float> initial_parameters(const ExperimentSpec& spec, const model::ViTConfig& cfg, std::string* note) {
  if (!spec.model.pretrained.empty()) {
    HfImport imported = load_hf_vit(spec.model.pretrained, cfg, static_cast<uint64_t>(spec.run.seed));
    if (note) *note = imported.note;
    return std::move(imported.params);
  }
  model::ParamLayout layout(cfg);
  std::vector<float> params(static_cast<size_t>(layout.total()));
  model::init_params(layout, cfg.init_std, static_cast<uint64_t>(spec.run.seed), params.data());
  if (note) *note = str_cat("random initialisation (truncated normal, std ", cfg.init_std, ", seed ", spec.run.seed, ")");
  return params;
}

// ---------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------

namespace {

// What differs between the spec that wrote a checkpoint and this one, in the
// sections that shape training (one "a.b: old -> new" per field).
std::vector<std::string> spec_differences(const nlohmann::json& before, const nlohmann::json& now) {
  std::vector<std::string> out;
  for (const char* section : {"data", "model", "plugin", "train"}) {
    if (!before.contains(section) || !now.contains(section)) continue;
    for (auto it = now[section].begin(); it != now[section].end(); ++it) {
      const nlohmann::json& old = before[section].contains(it.key()) ? before[section][it.key()] : nlohmann::json();
      if (old != it.value()) out.push_back(str_cat(section, ".", it.key(), ": ", old.dump(), " -> ", it.value().dump()));
    }
  }
  return out;
}

class Trainer {
 public:
  Trainer(RunEnvironment& env, const ResumePlan& plan)
      : env_(env),
        spec_(env.spec()),
        cfg_(model_config(spec_)),
        full_layout_(cfg_),
        dataset_(data::Hdf5Dataset::open(spec_.data.path)),
        bar_(env.is_rank0(), spec_.run.progress, spec_.run.log_every),
        plan_(plan) {
    dataset_.check_matches(cfg_.image_size, cfg_.num_classes);
    // Activations are sized by the training micro-batch; evaluation runs its
    // batches in chunks of at most that size, so peak memory is what
    // training needs.
    parallel::PluginEnv penv{env.ctx(), &env.mesh()};
    plugin_ = parallel::make_plugin(plugin_options(spec_), cfg_, compute_config(spec_), spec_.train.batch_size, penv);
    plugin_->load_params(initial_parameters(spec_, cfg_, &init_note_));
    dp_ = plugin_->data_parallel_size();
    dp_rank_ = plugin_->data_parallel_rank();
    image_bytes_ = static_cast<size_t>(cfg_.image_size) * cfg_.image_size * cfg_.channels;
  }

  int run() {
    const auto& t = spec_.train;
    comm::Communicator& world = env_.mesh().world_comm();
    comm::CollectiveWatchdog& watchdog = comm::CollectiveWatchdog::get();

    // Checkpoints need a plugin that exports its state: refused here, on
    // every rank alike, before anything is written.
    if (!all_ranks_ok([&] {
          if (!spec_.checkpoint.dir.empty()) (void)plugin_->state_runs();
          const auto seen = all_gather_strings(world, plan_.checkpoint);
          for (const std::string& s : seen) {
            VIT_USER_CHECK(s == plan_.checkpoint, "checkpoint.dir: the ranks found different checkpoints to resume ('",
                           s, "' and '", plan_.checkpoint, "'): it must be a folder every rank sees the same");
          }
        })) {
      return 2;
    }
    if (plan_.checkpoint.empty()) {
      plugin_->load_params(initial_parameters(spec_, cfg_, &init_note_));
    } else {
      reader_ = std::make_unique<CheckpointReader>(plan_.checkpoint);
      const bool saved_ema = reader_->has_part(parallel::StatePart::Ema);
      plugin_->import_state([&](parallel::StatePart part, const parallel::TensorRun& r,
                                float* dst) { reader_->read(part, r, dst); },
                            saved_ema);
      if (spec_.train.ema_decay > 0 && !saved_ema) {
        state_notes_.push_back("the checkpoint holds no weight average (written with train.ema_decay 0, or by a "
                               "vit_hpc before checkpoint format 2): the average starts afresh from the resumed "
                               "weights, so evaluation and export with it differ from an uninterrupted run");
      }
      // eval.keep_best: the best validation so far and its weights (every
      // rank holds them, as gather_params gives them to every rank).
      if (spec_.eval.keep_best) {
        const TrainState& saved = reader_->state();
        if (saved.keep_best) {
          best_epoch_ = saved.best_epoch;
          best_accuracy_ = saved.best_accuracy;
          if (best_epoch_ > 0) best_params_ = reader_->read_best_weights(full_layout_);
        } else {
          state_notes_.push_back("the checkpoint holds no best-validation state (written without eval.keep_best, or "
                                 "by a vit_hpc before checkpoint format 2): best-model selection restarts from the "
                                 "epochs evaluated from here on");
        }
      }
      init_note_ = str_cat("resumed from ", reader_->dir(), " (step ", reader_->step(), "; this rank read ",
                           reader_->bytes_read(), " bytes of the checkpoint's ", reader_->shard_count(), " shard files)");
    }

    const int64_t per_rank = static_cast<int64_t>(t.batch_size) * t.grad_accum;
    const int64_t global_batch = per_rank * dp_;
    data::Loader loader(dataset_, spec_.data.train_split, sampler(spec_.data.train_split, per_rank, true),
                        augment_options(), loader_options());
    const int64_t steps_per_epoch = loader.steps_per_epoch();
    VIT_USER_CHECK(steps_per_epoch > 0, spec_.data.path, ": split '", spec_.data.train_split, "' has ",
                   dataset_.size(spec_.data.train_split), " images, too few for one global batch of ",
                   global_batch, " with data.drop_last");
    const int64_t total_steps = t.steps > 0 ? t.steps : steps_per_epoch * t.epochs;
    int64_t epochs = (total_steps + steps_per_epoch - 1) / steps_per_epoch;
    const double lr = t.lr * (t.lr_scale_with_world ? dp_ : 1);
    LrSchedule schedule(lr, total_steps, t.warmup_ratio, parse_schedule(t.schedule));
    LossScalerConfig sc;
    sc.enabled = spec_.plugin.precision == "fp16";
    sc.initial_scale = spec_.plugin.initial_scale;
    sc.growth_factor = spec_.plugin.growth_factor;
    sc.backoff_factor = spec_.plugin.backoff_factor;
    sc.growth_interval = spec_.plugin.growth_interval;
    sc.hysteresis = spec_.plugin.hysteresis;
    sc.min_scale = spec_.plugin.min_scale;
    sc.max_scale = spec_.plugin.max_scale;
    LossScaler scaler(sc);

    // The state the loop carries; a resume takes it from the checkpoint.
    TrainState st;
    st.base_lr = lr;
    st.total_steps = total_steps;
    st.warmup_steps = schedule.warmup_steps();
    st.schedule = t.schedule;
    st.steps_per_epoch = steps_per_epoch;
    st.seed = static_cast<uint64_t>(spec_.run.seed);
    st.augment_seed = augment_options().seed;
    st.model = cfg_;
    st.class_names = dataset_.info().class_names;
    st.layout = {{"plugin", plugin_->name()},        {"variant", plugin_->variant()},
                 {"precision", spec_.plugin.precision}, {"world_size", env_.world().size},
                 {"dp", dp_},                            {"tp", env_.mesh().tp_size()},
                 {"pp", env_.mesh().pp_size()},          {"batch_size", t.batch_size},
                 {"grad_accum", t.grad_accum},           {"global_batch", global_batch}};
    st.spec = spec_to_json(spec_);
    std::vector<std::string> resume_notes;
    std::unique_ptr<ResultsResume> resume;
    if (reader_) {
      const TrainState& saved = reader_->state();
      resume_notes = resume_state(saved, st, steps_per_epoch, global_batch);
      resume_notes.insert(resume_notes.end(), state_notes_.begin(), state_notes_.end());
      scaler.restore(st.scaler);
      resume = std::make_unique<ResultsResume>();
      resume->checkpoint = reader_->dir();
      resume->step = saved.step;
      resume->same_folder = plan_.same_run_folder;
      resume->keep_bytes = saved.metrics_bytes;
      resume->plugin = saved.layout.value("plugin", "");
      resume->world_size = saved.layout.value("world_size", 0);
      reader_.reset();  // the shard files are closed; a later save may replace their folder
    }
    if (resume) {  // nothing new to save until a step was taken
      last_saved_step_ = st.step;
      last_saved_epoch_ = st.epoch;
      last_saved_path_ = resume->checkpoint;
    }

    // A resume continues the epoch it stopped in; training extended beyond
    // the checkpoint's own end continues with the next epoch.
    epochs = std::max(epochs, st.epoch - 1 + (st.step_in_epoch + (total_steps - st.step) + steps_per_epoch - 1) /
                                                  steps_per_epoch);
    env_.open_results("train", plugin_->name(), global_batch, plugin_->variant(), resume.get());
    if (env_.is_rank0()) {
      bar_.line(str_cat("vit_hpc: ", plugin_->name(), " (", spec_.plugin.precision, ") on ",
                        env_.world().describe(), "; ", cfg_.num_parameters(), " parameters; global batch ",
                        global_batch, "; ", total_steps, " steps over ", epochs, " epochs; results in ",
                        env_.results_dir()));
      bar_.line(str_cat("weights: ", init_note_));
      if (const std::string blas = kernels::blas_core_note(); !blas.empty()) bar_.line(blas);
      if (!plan_.note.empty()) bar_.line(str_cat("resume: ", plan_.note));
      for (const std::string& n : resume_notes) bar_.line(str_cat("resume: ", n));
      for (const std::string& note : plugin_->notes()) bar_.line(note);
      for (const std::string& note : recipe_notes()) bar_.line(note);
    }

    int64_t step = st.step, adam_step = st.adam_step, steps_this_run = 0;
    const int64_t first_epoch = st.epoch;
    for (int64_t epoch = first_epoch;; ++epoch) {
      const bool continuing = epoch == first_epoch;
      const int64_t first = continuing ? st.step_in_epoch : 0;
      // An epoch whose steps are all done may still owe its summary and
      // evaluation (a checkpoint saved at its last step).
      if (step >= total_steps && first == 0) break;
      const int64_t epoch_steps = std::min(steps_per_epoch, total_steps - (step - first));
      const auto epoch_t0 = Clock::now();
      const double earlier_seconds = continuing ? st.progress.seconds : 0.0;
      double loss_sum = continuing ? st.progress.loss_sum : 0.0;
      int64_t images = continuing ? st.progress.images : 0;
      int64_t images_in_epoch = continuing ? st.images_in_epoch : 0;
      if (first < epoch_steps) loader.start_epoch(epoch, first);
      bar_.start(str_cat("epoch ", epoch, "/", epochs), epoch_steps);
      data::Batch batch;
      for (int64_t s = first; s < epoch_steps; ++s) {
        watchdog.set_phase(str_cat("step ", step + 1, " (epoch ", epoch, ")"));
        VIT_CHECK(loader.next(batch), "the loader ran out of batches at step ", s, " of epoch ", epoch);
        const double data_wait = loader.wait_seconds();
        ++step;
        ++steps_this_run;
        const auto step_t0 = Clock::now();
        const float lr_now = static_cast<float>(schedule.at(step));
        const float scale = scaler.scale();
        const bool at_min_scale = scaler.at_min_scale();
        std::vector<parallel::MicroBatch> micro = split_micro(batch, t.batch_size, t.grad_accum, image_bytes_);
        for (parallel::MicroBatch& m : micro) {
          // Masks keyed by the step and the image's place in the global batch
          // (the same whatever the number of ranks).
          m.noise_key = mix_seed(static_cast<uint64_t>(spec_.run.seed), 0x6d61736bull, static_cast<uint64_t>(step));
          m.first_sample += dp_rank_ * per_rank;
        }
        parallel::StepResult r = plugin_->train_step(micro, batch.global_count, lr_now, scale, adam_step);
        const double step_time = seconds_since(step_t0);
        scaler.update(r.skipped);
        if (!r.skipped) ++adam_step;
        loss_sum += r.loss;
        images += batch.global_count;
        images_in_epoch += batch.global_count;
        const double ips = static_cast<double>(batch.global_count) / step_time;
        env_.record({{"type", "step"},
                     {"step", step},
                     {"epoch", epoch},
                     {"loss", r.loss},
                     {"lr", lr_now},
                     {"grad_norm", r.grad_norm},
                     {"loss_scale", scale},
                     {"skipped", r.skipped},
                     {"step_time", step_time},
                     {"data_wait", data_wait},
                     {"images_per_s", ips},
                     {"peak_mem", env_.peak_memory()}});
        // A NaN/Inf loss or gradient norm: the plugin skipped the update (as
        // for an fp16 overflow). With fp16, overflows are how the loss scale
        // finds its level, so only those it can no longer answer count (at
        // min_scale), and a non-finite loss (a forward overflow).
        const bool nonfinite = !std::isfinite(r.loss) || !std::isfinite(r.grad_norm) ||
                               (r.skipped && (!scaler.enabled() || at_min_scale));
        st.nonfinite_in_row = nonfinite ? st.nonfinite_in_row + 1 : 0;
        if (nonfinite && env_.is_rank0()) {
          bar_.line(str_cat("step ", step, ": loss ", r.loss, ", gradient norm ", r.grad_norm,
                            ": not finite, step skipped (", st.nonfinite_in_row, " in a row; the run stops at ",
                            t.max_nonfinite_steps, ", train.max_nonfinite_steps)"));
        } else if (r.skipped && env_.is_rank0()) {
          bar_.line(str_cat("step ", step, ": gradients overflowed at loss scale ", scale,
                            "; step skipped, scale now ", scaler.scale()));
        }
        bar_.update(s + 1, r.loss, ips);
        if (steps_this_run == 1) {  // the step's GEMMs are tuned by now
          env_.save_gemm_tuning();
#ifdef VIT_WITH_CUDA
          const std::string note = env_.ctx().gpu ? gemm_tuning_note(*env_.ctx().gpu) : "";
          if (env_.is_rank0() && !note.empty()) bar_.line(note + " (rank 0, first step)");
#endif
        }
        if (st.nonfinite_in_row >= t.max_nonfinite_steps) {
          bar_.finish();
          const std::string msg =
              str_cat("steps ", step - st.nonfinite_in_row + 1, " to ", step, ": the loss or the gradient norm was "
                      "not finite ", st.nonfinite_in_row, " steps in a row (train.max_nonfinite_steps ",
                      t.max_nonfinite_steps, "): training diverged; lower train.lr (", lr,
                      ") or enable train.grad_clip, and resume from a checkpoint before step ",
                      step - st.nonfinite_in_row + 1);
          if (env_.is_rank0()) std::fprintf(stderr, "vit_hpc: error: %s\n", msg.c_str());
          env_.close_results(false, msg);
          return 1;
        }

        // Where the next step starts, should a checkpoint be saved now.
        st.step = step;
        st.adam_step = adam_step;
        st.epoch = epoch;
        st.step_in_epoch = s + 1;
        st.images_in_epoch = images_in_epoch;
        st.progress = EpochProgress{loss_sum, images, earlier_seconds + seconds_since(epoch_t0)};
        st.scaler = scaler.state();

        // Stop requests: a signal on any rank stops every rank.
        float signal = static_cast<float>(pending_stop_signal());
        world.all_reduce(&signal, 1, DType::F32, comm::ReduceOp::Max, Device::CPU);
        const bool stop_asked = signal != 0 ||
                                (spec_.checkpoint.stop_after_steps > 0 &&
                                 steps_this_run >= spec_.checkpoint.stop_after_steps && step < total_steps);
        // The last step's state is saved once, after its epoch is closed (below).
        const bool periodic =
            spec_.checkpoint.every_steps > 0 && step % spec_.checkpoint.every_steps == 0 && step < total_steps;
        // Without checkpoint.dir there is nowhere to save: a stop ends the
        // run with nothing to resume from (said below), and nothing is written.
        if ((stop_asked || periodic) && !spec_.checkpoint.dir.empty()) {
          if (!save(st, world) && (stop_asked || !spec_.checkpoint.continue_on_error)) {
            bar_.finish();
            env_.close_results(false, last_save_error_);
            return 1;
          }
        }
        if (stop_asked) {
          bar_.finish();
          const std::string why = signal != 0 ? stop_signal_name(static_cast<int>(signal))
                                              : str_cat("checkpoint.stop_after_steps ", spec_.checkpoint.stop_after_steps);
          if (env_.is_rank0()) {
            bar_.line(str_cat("stopped after step ", step, " (", why, ")",
                              last_saved_path_.empty() ? std::string(": no checkpoint.dir, nothing to resume from")
                                                       : str_cat("; the same command resumes from ", last_saved_path_)));
          }
          env_.close_results_interrupted(why, step, last_saved_path_);
          return last_saved_path_.empty() ? 1 : kExitInterrupted;
        }
      }
      bar_.finish();
      const double epoch_time = earlier_seconds + seconds_since(epoch_t0);
      const double avg_loss = loss_sum / static_cast<double>(epoch_steps);
      env_.record({{"type", "epoch"},
                   {"epoch", epoch},
                   {"steps", epoch_steps},
                   {"avg_loss", avg_loss},
                   {"it_per_s", epoch_steps / epoch_time},
                   {"images_per_s", images / epoch_time},
                   {"time", epoch_time}});
      std::string summary = str_cat("epoch ", epoch, "/", epochs, ": train loss ", fmt("%.4f", avg_loss));
      const bool last = epoch == epochs || step >= total_steps;
      if (spec_.eval.enabled && (epoch % spec_.eval.every_epochs == 0 || last)) {
        watchdog.set_phase(str_cat("evaluation after epoch ", epoch));
        parallel::EvalResult e;
        with_eval_weights([&] {
          e = evaluate(spec_.data.eval_split, epoch, eval_weights());
          // The best validation so far (ties keep the earlier epoch): its
          // weights, as evaluated, to the host.
          const double acc = e.count ? static_cast<double>(e.correct) / e.count : 0.0;
          if (spec_.eval.keep_best && (best_epoch_ == 0 || acc > best_accuracy_)) {
            best_accuracy_ = acc;
            best_epoch_ = epoch;
            best_params_ = plugin_->gather_params();  // collective
          }
        });
        summary += str_cat(" | ", spec_.data.eval_split, " loss ", fmt("%.4f", e.loss_sum / e.count), " acc ",
                           fmt("%.4f", static_cast<double>(e.correct) / e.count));
        if (spec_.eval.keep_best && best_epoch_ == epoch) summary += " (best)";
      }
      summary += str_cat(" | ", epoch_steps, " steps in ", fmt("%.1f", epoch_time), " s (",
                         fmt("%.2f", epoch_steps / epoch_time), " it/s, ", fmt("%.1f", images / epoch_time),
                         " img/s)");
      if (env_.is_rank0()) bar_.line(summary);
      // The epoch is closed: the next step begins the next one.
      st.step = step;
      st.adam_step = adam_step;
      st.epoch = epoch + 1;
      st.step_in_epoch = 0;
      st.images_in_epoch = 0;
      st.progress = EpochProgress{};
      st.scaler = scaler.state();
      if (spec_.checkpoint.every_epochs > 0 && epoch % spec_.checkpoint.every_epochs == 0) {
        if (!save(st, world) && !spec_.checkpoint.continue_on_error) {
          env_.close_results(false, last_save_error_);
          return 1;
        }
      }
      if (step >= total_steps) break;
    }
    if (env_.is_rank0() && !plugin_->run_summary().empty()) bar_.line(plugin_->run_summary());
    // The final state, unless a checkpoint of it exists already.
    if (!spec_.checkpoint.dir.empty() && !(last_saved_step_ == st.step && last_saved_epoch_ == st.epoch)) {
      if (!save(st, world) && !spec_.checkpoint.continue_on_error) {
        env_.close_results(false, last_save_error_);
        return 1;
      }
    }
    watchdog.set_phase("test evaluation");
    const bool test = spec_.eval.test_at_end && dataset_.info().has_split(spec_.data.test_split);
    if (test) {
      with_eval_weights([&] {
        const parallel::EvalResult e = evaluate(spec_.data.test_split, epochs, eval_weights());
        if (env_.is_rank0()) {
          bar_.line(str_cat(spec_.data.test_split, ": loss ", fmt("%.4f", e.loss_sum / e.count), " accuracy ",
                            fmt("%.4f", static_cast<double>(e.correct) / e.count), " over ", e.count, " images (",
                            spec_.train.ema_decay > 0 ? "weight average after the last epoch" : "last epoch's weights",
                            ")"));
        }
      });
    }
    // Best-model selection: the kept weights replace the trained ones (the
    // optimizer is done with them), are tested and exported.
    if (spec_.eval.keep_best && best_epoch_ > 0) {
      plugin_->load_params(best_params_);
      best_loaded_ = true;
      if (test) {
        const parallel::EvalResult e = evaluate(spec_.data.test_split, best_epoch_, "best");
        if (env_.is_rank0()) {
          bar_.line(str_cat(spec_.data.test_split, ": loss ", fmt("%.4f", e.loss_sum / e.count), " accuracy ",
                            fmt("%.4f", static_cast<double>(e.correct) / e.count), " over ", e.count,
                            " images (best validation epoch ", best_epoch_, ", ", spec_.data.eval_split,
                            " accuracy ", fmt("%.4f", best_accuracy_), ")"));
        }
      }
    }
    // What went wrong after training (the export): kept in the manifest of
    // an otherwise completed run, and the exit status of every rank.
    std::string after_training;
    if (!spec_.checkpoint.export_hf.empty()) {
      watchdog.set_phase("export");
      std::vector<float> params;
      if (best_loaded_) {
        params = plugin_->gather_params();  // collective
      } else {
        with_eval_weights([&] { params = plugin_->gather_params(); });
      }
      if (env_.is_rank0()) after_training = export_model(params);
    }
    env_.close_results(true, after_training);
    io::agree_or_throw([&] { VIT_USER_CHECK(after_training.empty(), after_training); }, "error: ", 1);
    return 0;
  }

 private:
  // Rank 0: writes the trained model to checkpoint.export_hf. Trained weights
  // are never dropped: when that fails (a full disk, a destination changed
  // during training) they go to the run's results folder, or failing that to
  // the temporary folder. Returns "" on success, else what happened and
  // where the weights are.
  std::string export_model(const std::vector<float>& params) {
    const std::string& dest = spec_.checkpoint.export_hf;
    const auto& classes = dataset_.info().class_names;
    std::string failure;
    try {
      check_export_destination(dest, spec_.checkpoint.overwrite_export);  // as in the preflight, again now
      export_hf_vit(dest, cfg_, params, classes);
      bar_.line(str_cat("exported the trained model to ", dest,
                        " (model.safetensors + config.json, transformers ViTForImageClassification)"));
      return "";
    } catch (const UserError& e) {
      failure = str_cat("checkpoint.export_hf: ", e.what());
    }
    const char* tmp = std::getenv("TMPDIR");
    const std::vector<std::string> fallbacks = {
        env_.results_dir() + "/export_hf",
        str_cat(tmp && *tmp ? tmp : "/tmp", "/vit_hpc_export_", spec_.run.name, "_", ::getpid())};
    std::string also_failed;
    for (const std::string& f : fallbacks) {
      try {
        export_hf_vit(f, cfg_, params, classes);
        return str_cat(failure, also_failed, "; the trained model was saved to ", f,
                       " instead (model.safetensors + config.json): copy it from there");
      } catch (const UserError& e) {
        also_failed += str_cat("; saving it to ", f, " failed too (", e.what(), ")");
      }
    }
    return str_cat(failure, also_failed, ": the trained weights could not be kept");
  }

  // Takes the saved state into `st` (whose schedule, seeds and layout are
  // this run's) and says what changed since it was written.
  std::vector<std::string> resume_state(const TrainState& saved, TrainState& st, int64_t steps_per_epoch,
                                        int64_t global_batch) {
    std::vector<std::string> notes;
    const nlohmann::json& was = saved.layout;
    notes.push_back(str_cat("continuing after step ", saved.step, " (epoch ", saved.epoch, ", ", saved.step_in_epoch,
                            " of its steps done); checkpoint written by ", was.value("plugin", "?"), " (",
                            was.value("precision", "?"), ") on ", was.value("world_size", 0),
                            was.value("world_size", 0) == 1 ? " rank" : " ranks", ", dp ",
                            was.value("dp", 0)));
    if (was.value("plugin", "") != plugin_->name() || was.value("variant", "") != plugin_->variant()) {
      notes.push_back(str_cat("the plugin changes from ", was.value("plugin", "?"),
                              was.value("variant", "").empty() ? "" : " " + was.value("variant", ""), " to ",
                              plugin_->name(), plugin_->variant().empty() ? "" : " " + plugin_->variant(),
                              ": the optimizer state was re-sharded by tensor name"));
    }
    if (was.value("world_size", 0) != env_.world().size || was.value("dp", 0) != dp_) {
      const int before = was.value("world_size", 0), now = env_.world().size;
      notes.push_back(str_cat("the layout changes from ", before, before == 1 ? " rank" : " ranks", " (dp ",
                              was.value("dp", 0), ") to ", now, now == 1 ? " rank" : " ranks", " (dp ", dp_, ")"));
    }
    st.step = saved.step;
    st.adam_step = saved.adam_step;
    st.epoch = saved.epoch;
    st.step_in_epoch = saved.step_in_epoch;
    st.images_in_epoch = saved.images_in_epoch;
    st.progress = saved.progress;
    st.scaler = saved.scaler;
    st.nonfinite_in_row = saved.nonfinite_in_row;
    const int64_t old_batch = was.value("global_batch", int64_t{0});
    if (old_batch != global_batch) {
      // The position in the epoch is kept in images: continue at the step
      // of the new batch that holds the next unseen image.
      st.step_in_epoch = std::min(steps_per_epoch, saved.images_in_epoch / global_batch);
      const int64_t again = saved.images_in_epoch - st.step_in_epoch * global_batch;
      st.images_in_epoch = st.step_in_epoch * global_batch;
      notes.push_back(str_cat("the global batch changes from ", old_batch, " to ", global_batch, ": epoch ", st.epoch,
                              " continues at image ", st.images_in_epoch, " of its order (step ", st.step_in_epoch,
                              " of ", steps_per_epoch, ")",
                              again > 0 ? str_cat("; ", again, " images before it are seen again") : std::string(),
                              "; steps are counted in the new batch from here"));
    }
    if (saved.base_lr != st.base_lr || saved.total_steps != st.total_steps || saved.warmup_steps != st.warmup_steps ||
        saved.schedule != st.schedule) {
      notes.push_back(str_cat("the learning-rate schedule differs from the checkpoint's (", saved.schedule, ", lr ",
                              saved.base_lr, ", ", saved.total_steps, " steps, ", saved.warmup_steps,
                              " warm-up) and is now ", st.schedule, ", lr ", st.base_lr, ", ", st.total_steps,
                              " steps, ", st.warmup_steps, " warm-up: the curve will not match an uninterrupted run"));
    }
    if (saved.seed != st.seed) {
      notes.push_back(str_cat("run.seed changes from ", saved.seed, " to ", st.seed,
                              ": the data order and augmentation differ from here on"));
    }
    const std::vector<std::string> diff = spec_differences(saved.spec, st.spec);
    if (!diff.empty()) {
      std::string d;
      for (size_t i = 0; i < diff.size(); ++i) d += (i ? "; " : "") + diff[i];
      notes.push_back(str_cat("spec fields that differ from the run that wrote it: ", d));
    }
    return notes;
  }

  // Saves `st` (collective). False when the checkpoint could not be written;
  // last_save_error_ then says why and that the previous one is intact.
  bool save(TrainState& st, comm::Communicator& world) {
    comm::CollectiveWatchdog::get().set_phase(str_cat("saving checkpoint ", checkpoint_folder_name(st.step)));
    VIT_CHECK(!spec_.checkpoint.dir.empty(), "save: no checkpoint.dir (the caller checks)");
    st.results_dir = env_.results_dir();
    st.metrics_bytes = all_gather_int64(world, env_.metrics_bytes());
    st.keep_best = spec_.eval.keep_best;
    st.best_epoch = spec_.eval.keep_best ? best_epoch_ : 0;
    st.best_accuracy = spec_.eval.keep_best ? best_accuracy_ : 0.0;
    const SaveOutcome out = save_checkpoint(spec_.checkpoint.dir, st, *plugin_, full_layout_, world,
                                            spec_.checkpoint.keep_last, best_params_);
    if (!out.ok) {
      const std::string previous = find_latest_checkpoint(spec_.checkpoint.dir);
      last_save_error_ = str_cat("checkpoint ", checkpoint_folder_name(st.step), " could not be written: ", out.error,
                                 "; ", previous.empty() ? std::string("there is no earlier checkpoint")
                                                        : str_cat("the previous one, ", previous, ", is intact"),
                                 spec_.checkpoint.continue_on_error ? "; training goes on (checkpoint.continue_on_error)"
                                                                    : "");
      if (env_.is_rank0()) std::fprintf(stderr, "vit_hpc: %s: %s\n",
                                        spec_.checkpoint.continue_on_error ? "warning" : "error",
                                        last_save_error_.c_str());
      return false;
    }
    last_saved_step_ = st.step;
    last_saved_epoch_ = st.epoch;
    last_saved_path_ = out.path;
    if (env_.is_rank0()) {
      bar_.line(str_cat("checkpoint ", out.path, ": ", fmt("%.1f", out.bytes / 1048576.0), " MiB in ",
                        fmt("%.2f", out.seconds), " s"));
    }
    return true;
  }

  data::SamplerOptions sampler(const std::string& split, int64_t per_rank, bool training) const {
    data::SamplerOptions o;
    o.dataset_size = dataset_.size(split);
    o.batch_per_rank = per_rank;
    o.dp_rank = dp_rank_;
    o.dp_size = dp_;
    o.shuffle = training;
    o.drop_last = training && spec_.data.drop_last;
    o.seed = static_cast<uint64_t>(spec_.run.seed);
    return o;
  }

  data::AugmentOptions augment_options() const {
    const DataSpec& d = spec_.data;
    data::AugmentOptions a;
    a.enabled = d.augment;
    a.scale_min = static_cast<float>(d.crop_scale_min);
    a.ratio_min = static_cast<float>(d.crop_ratio_min);
    a.ratio_max = static_cast<float>(d.crop_ratio_max);
    a.hflip = d.hflip;
    a.seed = mix_seed(static_cast<uint64_t>(spec_.run.seed), 0xa06);
    a.auto_augment = d.auto_augment == "trivial" ? data::AutoAugmentPolicy::Trivial
                     : d.auto_augment == "rand"  ? data::AutoAugmentPolicy::Rand
                                                 : data::AutoAugmentPolicy::None;
    a.rand_ops = d.rand_ops;
    a.rand_magnitude = d.rand_magnitude;
    a.erase_prob = static_cast<float>(d.random_erase);
    a.mixup_alpha = static_cast<float>(d.mixup_alpha);
    a.cutmix_alpha = static_cast<float>(d.cutmix_alpha);
    a.mix_prob = static_cast<float>(d.mix_prob);
    a.mix_switch_prob = static_cast<float>(d.mix_switch_prob);
    return a;
  }

  data::LoaderOptions loader_options() const {
    data::LoaderOptions o;
    o.prefetch = spec_.data.prefetch;
    o.threads = spec_.data.loader_threads;
    o.pinned = env_.ctx().device == Device::CUDA;
    return o;
  }

  // Lines for the log about the recipe (what the spec turned on).
  std::vector<std::string> recipe_notes() const {
    std::vector<std::string> out;
    const model::Regularization reg = compute_config(spec_).reg;
    const auto& d = spec_.data;
    std::string aug;
    if (d.augment) aug += str_cat("crop (scale >= ", d.crop_scale_min, ")", d.hflip ? " + flip" : "");
    if (d.auto_augment != "none") {
      aug += str_cat(aug.empty() ? "" : ", ",
                     d.auto_augment == "trivial" ? std::string("TrivialAugment")
                                                 : str_cat("RandAugment (N ", d.rand_ops, ", M ", d.rand_magnitude, ")"));
    }
    if (d.random_erase > 0) aug += str_cat(aug.empty() ? "" : ", ", "random erasing p ", d.random_erase);
    if (d.mixup_alpha > 0) aug += str_cat(aug.empty() ? "" : ", ", "mixup alpha ", d.mixup_alpha);
    if (d.cutmix_alpha > 0) aug += str_cat(aug.empty() ? "" : ", ", "cutmix alpha ", d.cutmix_alpha);
    if ((d.mixup_alpha > 0 || d.cutmix_alpha > 0) && d.mix_prob < 1) aug += str_cat(" (p ", d.mix_prob, ")");
    std::string regs;
    if (reg.label_smoothing > 0) regs += str_cat("label smoothing ", reg.label_smoothing);
    if (reg.drop_path > 0) regs += str_cat(regs.empty() ? "" : ", ", "drop path ", reg.drop_path);
    if (reg.hidden_dropout > 0) regs += str_cat(regs.empty() ? "" : ", ", "dropout ", reg.hidden_dropout);
    const auto& t = spec_.train;
    if (t.ema_decay > 0) regs += str_cat(regs.empty() ? "" : ", ", "EMA ", t.ema_decay);
    if (t.layer_decay != 1.0) regs += str_cat(regs.empty() ? "" : ", ", "layer decay ", t.layer_decay);
    if (t.no_decay_bias_norm) regs += str_cat(regs.empty() ? "" : ", ", "no decay on biases/norms/embeddings");
    if (spec_.eval.keep_best) regs += str_cat(regs.empty() ? "" : ", ", "best-validation weights kept");
    if (!aug.empty() || !regs.empty()) {
      out.push_back(str_cat("recipe: ", aug.empty() ? "no augmentation" : aug, regs.empty() ? "" : "; ", regs));
    }
    if (spec_.model.pretrained_dropout) {
      const HfDropout hd = read_hf_dropout(spec_.model.pretrained);
      if (hd.attention > 0) {
        out.push_back(str_cat("note: the checkpoint's attention_probs_dropout_prob ", hd.attention,
                              " is not applied (attention-probability dropout is not built); hidden dropout ",
                              hd.hidden, " is"));
      }
    }
    return out;
  }

  // Evaluation and export see the weight average when there is one: it is
  // swapped in for `fn` and out again afterwards.
  template <typename Fn>
  void with_eval_weights(Fn fn) {
    const bool ema = spec_.train.ema_decay > 0 && !best_loaded_;
    if (ema) plugin_->swap_ema();
    fn();
    if (ema) plugin_->swap_ema();
  }
  const char* eval_weights() const { return spec_.train.ema_decay > 0 ? "ema" : "last"; }

  // Loss and accuracy over a whole split: every rank its slice, sums over all.
  // `weights`: which weights ran (metrics field): last, ema or best.
  parallel::EvalResult evaluate(const std::string& split, int64_t epoch, const char* weights) {
    data::AugmentOptions none;
    none.enabled = false;
    data::Loader loader(dataset_, split, sampler(split, spec_.eval.batch_size, false), none, loader_options());
    loader.start_epoch(0);
    parallel::EvalResult local;
    data::Batch batch;
    const int64_t chunk = spec_.train.batch_size;
    // Every rank makes the same number of eval_batch calls (some with no
    // images where its share of a last batch is short): a plugin whose
    // forward gathers parameters (gemini) runs collectives in each.
    const int64_t per_rank = spec_.eval.batch_size;
    while (loader.next(batch)) {
      for (int64_t first = 0; first < per_rank; first += chunk) {
        parallel::MicroBatch mb;
        mb.images = batch.images.as<uint8_t>() + std::min(first, batch.count) * static_cast<int64_t>(image_bytes_);
        mb.labels = batch.labels.data() + std::min(first, batch.count);
        mb.count = static_cast<int>(std::max<int64_t>(0, std::min(chunk, batch.count - first)));
        const parallel::EvalResult r = plugin_->eval_batch(mb);
        local.loss_sum += r.loss_sum;
        local.correct += r.correct;
        local.count += r.count;
      }
    }
    const parallel::EvalResult g = plugin_->all_reduce_eval(local);
    env_.record({{"type", "eval"},
                 {"split", split},
                 {"epoch", epoch},
                 {"loss", g.count ? g.loss_sum / g.count : 0.0},
                 {"accuracy", g.count ? static_cast<double>(g.correct) / g.count : 0.0},
                 {"count", g.count},
                 {"weights", weights}});
    return g;
  }

  RunEnvironment& env_;
  const ExperimentSpec& spec_;
  model::ViTConfig cfg_;
  model::ParamLayout full_layout_;  // unsharded: the tensors' global shapes
  data::Hdf5Dataset dataset_;
  ProgressBar bar_;
  ResumePlan plan_;
  std::unique_ptr<CheckpointReader> reader_;
  std::unique_ptr<parallel::Plugin> plugin_;
  int dp_ = 1, dp_rank_ = 0;
  size_t image_bytes_ = 0;
  std::string init_note_;
  int64_t last_saved_step_ = -1, last_saved_epoch_ = -1;
  std::string last_saved_path_, last_save_error_;
  // eval.keep_best: the best validation so far and its weights (host, full).
  int64_t best_epoch_ = 0;
  double best_accuracy_ = 0.0;
  std::vector<float> best_params_;
  bool best_loaded_ = false;  // best_params_ replaced the trained weights at the end
  std::vector<std::string> state_notes_;  // what a resume could not restore (printed with the resume notes)
};

}  // namespace

int train(RunEnvironment& env, const ResumePlan& plan) { return Trainer(env, plan).run(); }

// ---------------------------------------------------------------------------
// Benchmark
// ---------------------------------------------------------------------------

namespace {

// Multiply-add FLOPs (x2) of one image in the ops whose rate the profile
// reports: the dense layers (patch embedding, qkv, proj, fc1, fc2, head)
// forward, and attention's two T x T products forward; backward is twice the
// forward. Other ops are memory-bound: their time is shown, not a rate.
double op_flops_per_image(const model::ViTConfig& c, const std::string& op) {
  const double T = c.tokens(), C = c.hidden, F = c.mlp_dim, L = c.depth;
  const double dense = 2.0 * (L * T * (4.0 * C * C + 2.0 * C * F) + c.num_patches() * double(c.patch_dim()) * C +
                              C * c.num_classes);
  const double attention = 4.0 * L * T * T * C;
  if (op == "matmul_forward") return dense;
  if (op == "matmul_backward") return 2.0 * dense;
  if (op == "attention_forward") return attention;
  if (op == "attention_backward") return 2.0 * attention;
  return 0.0;
}

// The rate of one large GEMM in the compute dtype (cuBLASLt, 8192^3, best of
// 5 after a warm-up): the ceiling the step's arithmetic rate is compared with.
double measure_matrix_ceiling(const Context& ctx, DType dt) {
  const int64_t n = 8192;
  Buffer a(static_cast<size_t>(n * n) * dtype_size(dt), ctx.device), w(a.bytes(), ctx.device),
      out(a.bytes(), ctx.device);
  a.zero();
  w.zero();
  Tensor ta = tensor_of(a, dt, {n, n}), tw = tensor_of(w, dt, {n, n}), to = tensor_of(out, dt, {n, n});
  kernels::matmul_forward(ctx, to, Tensor(), ta, tw, Tensor());  // plans and workspaces
  synchronize_stream(ctx.stream);
  auto& prof = kernels::OpProfiler::instance();
  prof.enable(true);
  for (int i = 0; i < 5; ++i) kernels::matmul_forward(ctx, to, Tensor(), ta, tw, Tensor());
  synchronize_stream(ctx.stream);
  prof.enable(false);
  const auto times = prof.collect();
  VIT_CHECK(!times.empty() && times[0].calls == 5, "matrix ceiling: the profiler recorded no GEMM");
  return 2.0 * n * n * n / (times[0].ms / times[0].calls * 1e-3) / 1e12;
}

// The rate of a device-to-device copy of 256 MiB (mean of 5 after a
// warm-up, timed by the profiler's events; each byte read and written): the
// ceiling the memory-bound ops' TB/s are compared with.
double measure_memory_ceiling(const Context& ctx) {
  const size_t bytes = size_t(256) << 20;
  Buffer a(bytes, ctx.device), b(bytes, ctx.device);
  a.zero();
  copy_bytes_async(b.data(), a.data(), bytes, ctx.stream);
  synchronize_stream(ctx.stream);
  auto& prof = kernels::OpProfiler::instance();
  prof.enable(true);
  for (int i = 0; i < 5; ++i) {
    const kernels::ProfileScope timed(ctx, "device_copy", 2.0 * static_cast<double>(bytes));
    copy_bytes_async(b.data(), a.data(), bytes, ctx.stream);
  }
  synchronize_stream(ctx.stream);
  prof.enable(false);
  const auto times = prof.collect();
  VIT_CHECK(times.size() == 1 && times[0].calls == 5 && times[0].ms > 0, "memory ceiling: the profiler recorded no copy");
  return times[0].bytes / (times[0].ms * 1e-3) / 1e12;
}

}  // namespace

int benchmark(RunEnvironment& env) {
  const ExperimentSpec& spec = env.spec();
  const model::ViTConfig cfg = model_config(spec);
  const int B = spec.train.batch_size;
  parallel::PluginEnv penv{env.ctx(), &env.mesh()};
  auto plugin = parallel::make_plugin(plugin_options(spec), cfg, compute_config(spec), B, penv);
  plugin->load_params(initial_parameters(spec, cfg, nullptr));
  const int dp = plugin->data_parallel_size();
  const int64_t per_rank = static_cast<int64_t>(B) * spec.train.grad_accum;
  const int64_t global_batch = per_rank * dp;  // each global batch counted once, whatever tp/pp do

  // Synthetic images and labels, made once and kept where the model runs.
  const size_t image_bytes = static_cast<size_t>(cfg.image_size) * cfg.image_size * cfg.channels;
  std::vector<uint8_t> host_images(image_bytes * per_rank);
  std::vector<int32_t> labels(static_cast<size_t>(per_rank));
  Rng rng(mix_seed(static_cast<uint64_t>(spec.run.seed), 0xbe4c, plugin->data_parallel_rank()));
  for (auto& p : host_images) p = static_cast<uint8_t>(rng.below(256));
  for (auto& l : labels) l = static_cast<int32_t>(rng.below(static_cast<uint64_t>(cfg.num_classes)));
  const Device dev = env.ctx().device;
  Buffer images(host_images.size(), dev);
  copy_bytes(images.data(), dev, host_images.data(), Device::CPU, host_images.size());
  std::vector<parallel::MicroBatch> micro(static_cast<size_t>(spec.train.grad_accum));
  for (size_t i = 0; i < micro.size(); ++i) {
    micro[i].images = images.as<uint8_t>() + i * B * image_bytes;
    micro[i].labels = labels.data() + i * B;
    micro[i].count = B;
    micro[i].on_device = dev == Device::CUDA;
  }

  // The results column tells activation recompute, the attention backward's
  // form and the CUDA graphs apart (run_benchmark.sh's +recompute,
  // +recompute_gelu, +recompute_norm, +attention_atomics, +cudnn_attention_backward, +mma_attention_backward,
  // +cudnn_attention_forward, +no_cuda_graph, +no_gemm_autotune and +no_gemm_autotune_wide entries).
  std::string variant = plugin->variant();
  for (const auto& [on, what] : {std::pair<bool, const char*>{spec.train.recompute, "recompute"},
                                 std::pair<bool, const char*>{spec.train.recompute_gelu, "recompute gelu"},
                                 std::pair<bool, const char*>{spec.train.recompute_norm, "recompute norm"},
                                 std::pair<bool, const char*>{!spec.model.attention_deterministic,
                                                              "attention dQ atomics"},
                                 std::pair<bool, const char*>{spec.model.attention_backward == "cudnn",
                                                              "cuDNN attention backward"},
                                 std::pair<bool, const char*>{spec.model.attention_backward == "mma",
                                                              "mma.sync attention backward"},
                                 std::pair<bool, const char*>{spec.model.attention_forward == "cudnn",
                                                              "cuDNN attention forward"},
                                 std::pair<bool, const char*>{!spec.plugin.cuda_graph, "no CUDA graphs"},
                                 std::pair<bool, const char*>{!spec.plugin.gemm_autotune, "no GEMM tuning"},
                                 std::pair<bool, const char*>{spec.plugin.gemm_autotune && !spec.plugin.gemm_autotune_wide,
                                                              "list GEMM tuning"}}) {
    if (on) variant += (variant.empty() ? "" : ", ") + std::string(what);
  }
  env.open_results("benchmark", plugin->name(), global_batch, variant);
  ProgressBar bar(env.is_rank0(), spec.run.progress, spec.run.log_every);
  if (env.is_rank0()) {
    bar.line(str_cat("vit_hpc benchmark: ", plugin->name(), " (", spec.plugin.precision, ") on ",
                     env.world().describe(), "; batch ", B, " per rank, global ", global_batch, "; ",
                     spec.benchmark.warmup_steps, " warm-up + ", spec.benchmark.steps, " measured steps"));
    for (const std::string& note : plugin->notes()) bar.line(note);
  }
  const float lr = static_cast<float>(spec.train.lr);
  int64_t adam_step = 1;
  for (int i = 0; i < spec.benchmark.warmup_steps; ++i) {
    plugin->train_step(micro, global_batch, lr, 1.0f, adam_step++);
  }
  env.save_gemm_tuning();
  env.mesh().world_comm().barrier();
  reset_peak_memory(dev);
  std::vector<double> times;
  // The GPU's power, SM clock and energy over the measured steps (NVML; a
  // sampling thread of its own).
  GpuPowerMeter power_meter(env.gpu_bus_id());
  bar.start("benchmark", spec.benchmark.steps);
  power_meter.start();
  const auto t0 = Clock::now();
  for (int i = 0; i < spec.benchmark.steps; ++i) {
    if (i + 1 == spec.benchmark.steps) plugin->record_timeline();  // the last measured step
    const auto s0 = Clock::now();
    const parallel::StepResult r = plugin->train_step(micro, global_batch, lr, 1.0f, adam_step++);
    times.push_back(seconds_since(s0));  // train_step ends with the step's one host synchronisation
    bar.update(i + 1, r.loss, global_batch / times.back());
  }
  env.mesh().world_comm().barrier();
  const double wall = seconds_since(t0);
  const GpuPowerSummary power = power_meter.stop();
  bar.finish();
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  auto pct = [&](double q) {
    return sorted.empty() ? 0.0 : sorted[static_cast<size_t>(std::lround(q * (sorted.size() - 1)))];
  };
  const double ips = static_cast<double>(global_batch) * spec.benchmark.steps / wall;
  const size_t peak = env.peak_memory();
  // A plugin's timeline of its last step (gemini: per chunk), one file a rank.
  const std::string timeline = plugin->timeline();
  if (!timeline.empty()) {
    const std::string path = str_cat(env.results_dir(), "/timeline_rank_", env.world().rank, ".txt");
    std::ofstream out(path);
    out << timeline;
    VIT_CHECK(static_cast<bool>(out), "cannot write the timeline ", path);
  }
  // Each measured step's time on its own line (written after the measured
  // loop, so the file writes stay out of the wall time), then the summary.
  for (size_t i = 0; i < times.size(); ++i) {
    env.record({{"type", "benchmark_step"}, {"step", static_cast<int64_t>(i + 1)}, {"step_time", times[i]}});
  }
  // The arithmetic rate per GPU (model FLOPs of the images this rank's
  // share of the world processed), and with benchmark.profile the time of
  // every op in a few more steps (after the measured ones, so the events the
  // profiler records do not touch the throughput above) and the measured
  // matrix ceiling.
  const int world = env.world().size;
  const double model_tflops = cfg.train_flops_per_image() * ips / world / 1e12;
  double ceiling = 0.0, memory_ceiling = 0.0;
  std::vector<kernels::OpTime> ops;
  const int profiled = spec.benchmark.profile ? std::min(spec.benchmark.steps, 5) : 0;
  if (profiled > 0) {
    auto& prof = kernels::OpProfiler::instance();
    prof.enable(true);
    for (int i = 0; i < profiled; ++i) plugin->train_step(micro, global_batch, lr, 1.0f, adam_step++);
    synchronize_stream(env.ctx().stream);
    prof.enable(false);
    ops = prof.collect();
    if (dev == Device::CUDA) {
      ceiling = measure_matrix_ceiling(env.ctx(), parse_dtype(spec.plugin.precision));
      memory_ceiling = measure_memory_ceiling(env.ctx());
    }
    double total = 0.0;
    for (const auto& o : ops) total += o.ms;
    for (const auto& o : ops) {
      const double ms = o.ms / profiled;
      nlohmann::json line = {{"type", "profile"},
                             {"op", o.name},
                             {"ms_per_step", ms},
                             {"calls_per_step", static_cast<double>(o.calls) / profiled},
                             {"share", total > 0 ? o.ms / total : 0.0}};
      const double flops = op_flops_per_image(cfg, o.name) * per_rank * dp / world;
      if (flops > 0 && ms > 0) line["tflops"] = flops / (ms * 1e-3) / 1e12;
      // Memory-bound ops: the bytes they said they move (profile.h) per second.
      if (flops == 0 && o.bytes > 0 && ms > 0) line["tbps"] = o.bytes / profiled / (ms * 1e-3) / 1e12;
      env.record(line);
    }
  }
  nlohmann::json bench = {{"type", "benchmark"},
                          {"batch_size", B},
                          {"global_batch", global_batch},
                          {"warmup_steps", spec.benchmark.warmup_steps},
                          {"steps", spec.benchmark.steps},
                          {"images_per_s", ips},
                          {"it_per_s", spec.benchmark.steps / wall},
                          {"step_time_median", pct(0.5)},
                          {"step_time_min", pct(0.0)},
                          {"step_time_max", pct(1.0)},
                          {"step_time_p10", pct(0.1)},
                          {"step_time_p90", pct(0.9)},
                          {"model_tflops_per_gpu", model_tflops},
                          {"matrix_ceiling_tflops", ceiling},
                          {"memory_ceiling_tbps", memory_ceiling},
                          {"profiled_steps", profiled},
                          {"peak_mem", peak}};
  if (power.measured) {
    bench["gpu_energy_j"] = power.energy_j;
    bench["gpu_power_w"] = power.power_mean_w;
    bench["gpu_power_limit_w"] = power.power_limit_w;
    bench["sm_clock_mhz"] = power.sm_clock_median_mhz;
    bench["sm_clock_min_mhz"] = power.sm_clock_min_mhz;
    bench["sm_clock_max_mhz"] = power.sm_clock_max_mhz;
    bench["power_capped_share"] = power.power_capped_share;
    bench["thermal_share"] = power.thermal_share;
    bench["power_samples"] = power.samples;
    bench["energy_counter_span_s"] = power.counter_span_s;
  }
  env.record(bench);
  // Energy per image over every GPU of the job (each rank reads its own; a
  // GPU shared by ranks counts once per rank).
  float energy[2] = {power.measured ? static_cast<float>(power.energy_j) : 0.0f, power.measured ? 1.0f : 0.0f};
  env.mesh().world_comm().all_reduce(energy, 2, DType::F32, comm::ReduceOp::Sum, Device::CPU);
  if (env.is_rank0()) {
    bar.line(str_cat("throughput ", fmt("%.1f", ips), " images/s, step median ", fmt("%.4f", pct(0.5)),
                     " s (p10 ", fmt("%.4f", pct(0.1)), ", p90 ", fmt("%.4f", pct(0.9)), "), peak memory ",
                     fmt("%.1f", peak / 1048576.0), " MiB on rank 0"));
    std::string rate = str_cat("arithmetic rate ", fmt("%.3f", model_tflops), " TFLOP/s per ",
                               dev == Device::CUDA ? "GPU" : "rank", " (model FLOPs)");
    if (ceiling > 0) rate += str_cat(", ", fmt("%.1f", 100.0 * model_tflops / ceiling), "% of the measured ",
                                     fmt("%.0f", ceiling), " TFLOP/s ", spec.plugin.precision, " GEMM ceiling");
    bar.line(rate);
    if (dev == Device::CUDA) {
      // Per image: every rank's energy, where every rank measured it.
      const bool all = power.measured && static_cast<int>(energy[1]) == world;
      const double per_image = all ? energy[0] / (static_cast<double>(global_batch) * spec.benchmark.steps) : 0.0;
      bar.line(str_cat(world > 1 ? "rank 0: " : "", describe_power(power, per_image),
                       all ? (world == 1 ? " over the GPU" : str_cat(" over the ", world, " ranks' GPUs")) : ""));
    }
    if (!plugin->run_summary().empty()) bar.line(plugin->run_summary());
#ifdef VIT_WITH_CUDA
    const std::string tuning = env.ctx().gpu ? gemm_tuning_note(*env.ctx().gpu) : "";
    if (!tuning.empty()) bar.line(tuning);
    if (env.ctx().gpu) bar.line(workspace_note(*env.ctx().gpu));
#endif
    if (!ops.empty()) {
      bar.line(str_cat("profile (rank 0, mean of ", profiled, " steps after the measured ones; ",
                       dev == Device::CUDA ? "GPU time of each op, communication on its own stream" : "wall time of each op",
                       "):"));
      double total = 0.0;
      for (const auto& o : ops) total += o.ms;
      for (const auto& o : ops) {
        const double ms = o.ms / profiled;
        const double flops = op_flops_per_image(cfg, o.name) * per_rank * dp / world;
        std::string rate;
        if (flops > 0 && ms > 0) {
          rate = str_cat("  ", fmt("%8.2f", flops / (ms * 1e-3) / 1e9), " GFLOP/s");
        } else if (o.bytes > 0 && ms > 0) {
          rate = str_cat("  ", fmt("%8.2f", o.bytes / profiled / (ms * 1e-3) / 1e9), " GB/s");
        }
        bar.line(str_cat("  ", o.name, std::string(o.name.size() < 28 ? 28 - o.name.size() : 1, ' '),
                         fmt("%8.3f", ms), " ms  ", fmt("%5.1f", 100.0 * o.ms / total), "%", rate));
      }
    }
  }
  env.close_results(true);
  return 0;
}

}  // namespace vit::train
