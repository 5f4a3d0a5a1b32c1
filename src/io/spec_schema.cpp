// The schema: every field of the experiment spec, in ONE table.
//
// Each row is a dotted path, the member it fills, its default (written as
// YAML text and parsed by the same code as a user's value, so a default
// cannot escape its own range check), the allowed range or words, and one
// line of meaning. `vit_hpc --print-spec` prints this table; nothing else in
// the code base restates a default.
//
// The trick that keeps rows honest: VIT_AT(section, key) builds a FieldRef
// typed by the member's C++ type, and the row makers (Int, Float, Bool, ...)
// accept only the matching type, so a row that says Float for an int member
// does not compile.
#include <limits>
#include <type_traits>
#include <utility>

#include "core/error.h"
#include "io/spec.h"

namespace vit {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

template <typename T>
struct FieldRef {
  const char* path;
  void* (*at)(ExperimentSpec&);
};

#define VIT_AT(section, key)                                                     \
  FieldRef<decltype(std::declval<ExperimentSpec&>().section.key)> {              \
    #section "." #key, [](ExperimentSpec& s) -> void* { return &s.section.key; } \
  }

// Ranges.
FieldRange any() { return {-kInf, kInf, false, false}; }
FieldRange at_least(double lo) { return {lo, kInf, false, false}; }
FieldRange above(double lo) { return {lo, kInf, true, false}; }
FieldRange closed(double lo, double hi) { return {lo, hi, false, false}; }
FieldRange closed_open(double lo, double hi) { return {lo, hi, false, true}; }  // [lo, hi)
FieldRange open_closed(double lo, double hi) { return {lo, hi, true, false}; }  // (lo, hi]
FieldRange open_open(double lo, double hi) { return {lo, hi, true, true}; }        // (lo, hi)

// Row makers: the FieldRef's type must match the kind of field.
FieldInfo Int(FieldRef<int> f, const char* def, FieldRange r, const char* meaning) {
  return {f.path, FieldType::Int, f.at, def, r, {}, meaning};
}
FieldInfo Float(FieldRef<double> f, const char* def, FieldRange r, const char* meaning) {
  return {f.path, FieldType::Float, f.at, def, r, {}, meaning};
}
FieldInfo Bool(FieldRef<bool> f, const char* def, const char* meaning) {
  return {f.path, FieldType::Bool, f.at, def, any(), {}, meaning};
}
FieldInfo String(FieldRef<std::string> f, const char* def, const char* meaning) {
  return {f.path, FieldType::String, f.at, def, any(), {}, meaning};
}
FieldInfo Name(FieldRef<std::string> f, const char* def, const char* meaning) {
  return {f.path, FieldType::Name, f.at, def, any(), {}, meaning};
}
FieldInfo Choice(FieldRef<std::string> f, const char* def, std::vector<std::string> words,
                 const char* meaning) {
  return {f.path, FieldType::Choice, f.at, def, any(), std::move(words), meaning};
}

std::vector<FieldInfo> build_schema() {
  return {
      // --- run -----------------------------------------------------------
      Name(VIT_AT(run, name), "vit_run", "Run name; metrics go to <output_dir>/<name>/."),
      Int(VIT_AT(run, seed), "42", at_least(0),
          "Seed of initialisation, shuffling and augmentation (the same on every rank)."),
      String(VIT_AT(run, output_dir), "results", "Folder holding one sub-folder per run."),
      Choice(VIT_AT(run, device), "auto", {"auto", "cpu", "cuda"},
             "Where to compute: auto = cuda when a GPU is visible, else cpu."),
      Int(VIT_AT(run, cpu_threads), "0", at_least(0),
          "CPU threads per rank; 0 = the node's cores divided among its ranks."),
      Int(VIT_AT(run, log_every), "10", at_least(1), "Steps between progress-bar refreshes."),
      Bool(VIT_AT(run, progress), "true", "Show the progress bar on rank 0 (off for batch-job logs)."),
      Float(VIT_AT(run, collective_timeout_s), "300", at_least(0),
            "Seconds a collective may wait for the other ranks before the job ends with a message naming the "
            "operation, the step and the ranks that did not arrive; 0 = wait forever."),

      // --- data ----------------------------------------------------------
      String(VIT_AT(data, path), "data/beans_224.h5",
             "HDF5 file written by vit_data_prep (unused when benchmark.enabled)."),
      Name(VIT_AT(data, train_split), "train", "HDF5 group trained on."),
      Name(VIT_AT(data, eval_split), "validation", "HDF5 group evaluated every eval.every_epochs."),
      Name(VIT_AT(data, test_split), "test", "HDF5 group evaluated once after training (eval.test_at_end)."),
      Bool(VIT_AT(data, augment), "false",
           "Random-resized crop (and flip, see hflip) of training images; for training from scratch."),
      Float(VIT_AT(data, crop_scale_min), "0.35", open_closed(0, 1),
            "Random-resized crop: smallest crop area, as a fraction of the image."),
      Float(VIT_AT(data, crop_ratio_min), "0.75", above(0),
            "Random-resized crop: smallest aspect ratio (width / height)."),
      Float(VIT_AT(data, crop_ratio_max), "1.3333", above(0),
            "Random-resized crop: largest aspect ratio; >= crop_ratio_min."),
      Bool(VIT_AT(data, hflip), "true", "With augment: flip training images left-right, probability 0.5."),
      Choice(VIT_AT(data, auto_augment), "none", {"none", "trivial", "rand"},
             "Training images: TrivialAugment (one op, random magnitude) or RandAugment (rand_ops ops at "
             "rand_magnitude); op list and magnitudes in src/data/auto_augment.h."),
      Int(VIT_AT(data, rand_ops), "2", closed(1, 8), "RandAugment: ops applied to each image (N)."),
      Int(VIT_AT(data, rand_magnitude), "9", closed(0, 30), "RandAugment: magnitude bin of every op (M, of 0..30)."),
      Float(VIT_AT(data, random_erase), "0.0", closed(0, 1),
            "Probability of erasing one random box of each training image (filled with noise; timm's RandomErasing)."),
      Float(VIT_AT(data, mixup_alpha), "0.0", at_least(0),
            "Mixup: each image blended with its partner, share ~ Beta(alpha, alpha); 0 = off (src/data/mix.h)."),
      Float(VIT_AT(data, cutmix_alpha), "0.0", at_least(0),
            "Cutmix: a box of the partner pasted in, area share ~ Beta(alpha, alpha); 0 = off."),
      Float(VIT_AT(data, mix_prob), "1.0", closed(0, 1),
            "With mixup or cutmix on: probability that an image is mixed at all."),
      Float(VIT_AT(data, mix_switch_prob), "0.5", closed(0, 1),
            "With mixup and cutmix both on: probability of cutmix rather than mixup."),
      Int(VIT_AT(data, prefetch), "2", at_least(1), "Batches the loader prepares ahead of the step."),
      Int(VIT_AT(data, loader_threads), "2", at_least(1), "Threads per rank reading and decoding images."),
      Bool(VIT_AT(data, drop_last), "true",
           "Drop each epoch's last incomplete training batch (evaluation never drops)."),
      Bool(VIT_AT(data, verify_checksum), "true",
           "Before training, check every image of data.path against the checksum vit_data_prep recorded for "
           "it (reads the file once, shared by the ranks of a node: 0.3 s for the 195 MB 224 px raw Beans "
           "file on 2 cores); false skips it for huge files."),

      // --- model ---------------------------------------------------------
      Int(VIT_AT(model, image_size), "224", at_least(1),
          "Image side in pixels (the HDF5 images must have this size)."),
      Int(VIT_AT(model, patch_size), "16", at_least(1), "Patch side in pixels; divides image_size."),
      Int(VIT_AT(model, channels), "3", at_least(1), "Image channels."),
      Int(VIT_AT(model, hidden), "768", at_least(1), "Embedding width C."),
      Int(VIT_AT(model, depth), "12", at_least(1), "Transformer blocks L."),
      Int(VIT_AT(model, heads), "12", at_least(1), "Attention heads NH; divides hidden."),
      Int(VIT_AT(model, mlp_dim), "3072", at_least(1), "Hidden width of each block's MLP."),
      Int(VIT_AT(model, num_classes), "3", at_least(2),
          "Classifier outputs; a pretrained head with another count is re-initialised."),
      Float(VIT_AT(model, layernorm_eps), "1e-12", above(0), "LayerNorm epsilon."),
      Float(VIT_AT(model, init_std), "0.02", above(0),
            "Std of the normal init of weights (random init and re-initialised heads)."),
      String(VIT_AT(model, pretrained), "",
             "Folder with a Hugging Face model.safetensors + config.json to start from; empty = random init."),
      Choice(VIT_AT(model, attention), "cudnn", {"cudnn", "cublas"},
             "GPU attention: cuDNN fused SDPA, or cuBLAS batched GEMMs + softmax (fallback, cross-check)."),
      Bool(VIT_AT(model, attention_deterministic), "true",
           "Where cuDNN's attention backward runs (see attention_backward): its deterministic form (reruns give "
           "the same bits); false: dQ is summed with fp32 atomics, ~10% faster, and reruns differ in the last bits."),
      Choice(VIT_AT(model, attention_backward), "auto", {"auto", "mma", "cudnn"},
             "Backward of the cudnn attention: auto runs vit_hpc's short-sequence kernel (bf16/fp16, head size "
             "64, up to 224 tokens; deterministic) where it fits, in its wgmma form on Hopper GPUs, and cuDNN's "
             "elsewhere; mma: the short-sequence kernel's mma.sync form on every GPU (the same bits as auto, "
             "slower on Hopper); cudnn: always cuDNN's."),
      Choice(VIT_AT(model, attention_forward), "auto", {"auto", "cudnn"},
             "Forward of the cudnn attention: auto runs vit_hpc's wgmma kernel on Hopper GPUs (bf16/fp16, head "
             "size 64, up to 256 tokens; keys padded to 16 rather than cuDNN's 64) and cuDNN's fused forward "
             "elsewhere; cudnn: always cuDNN's. Both write the statistics either backward reads."),
      Float(VIT_AT(model, drop_path), "0.0", closed_open(0, 1),
            "Stochastic depth of the last block; block l drops its branches per sample with rate "
            "drop_path * l / (depth - 1). Training only."),
      Float(VIT_AT(model, hidden_dropout), "0.0", closed_open(0, 1),
            "Dropout on the embeddings and on each attention / MLP output (transformers' hidden_dropout_prob). "
            "Training only."),
      Bool(VIT_AT(model, pretrained_dropout), "false",
           "Take hidden_dropout from model.pretrained's config.json (hidden_dropout_prob) instead."),

      // --- plugin --------------------------------------------------------
      Choice(VIT_AT(plugin, name), "torch_ddp",
             {"torch_ddp", "torch_ddp_fp16", "low_level_zero", "gemini", "hybrid_parallel"},
             "Parallel strategy (DESIGN.md section 1)."),
      Choice(VIT_AT(plugin, precision), "fp32", {"fp32", "bf16", "fp16"},
             "Compute precision; master weights and optimizer states stay fp32. "
             "torch_ddp: fp32 only; torch_ddp_fp16: bf16 or fp16."),
      Bool(VIT_AT(plugin, tf32), "true", "Allow TF32 tensor cores for fp32 GEMMs (GPU)."),
      Float(VIT_AT(plugin, initial_scale), "65536", above(0), "fp16: starting loss scale."),
      Float(VIT_AT(plugin, growth_factor), "2.0", above(1),
            "fp16: scale multiplier after growth_interval steps without overflow."),
      Float(VIT_AT(plugin, backoff_factor), "0.5", open_open(0, 1), "fp16: scale multiplier on overflow."),
      Int(VIT_AT(plugin, growth_interval), "1000", at_least(1),
          "fp16: overflow-free steps before the scale grows."),
      Int(VIT_AT(plugin, hysteresis), "2", at_least(1), "fp16: overflows tolerated before the scale backs off."),
      Float(VIT_AT(plugin, min_scale), "1.0", above(0), "fp16: smallest loss scale."),
      Float(VIT_AT(plugin, max_scale), "4294967296", above(0), "fp16: largest loss scale (2^32)."),
      Int(VIT_AT(plugin, bucket_mb), "25", at_least(1),
          "Gradient bucket size in MiB for the data-parallel all-reduce / reduce-scatter."),
      Bool(VIT_AT(plugin, overlap_comm), "true",
           "Start each bucket's collective during backward, as soon as its gradients are ready."),
      Choice(VIT_AT(plugin, reduce_dtype), "fp32", {"fp32", "bf16"},
             "Data type of the gradient all-reduce / reduce-scatter over the data-parallel ranks (torch_ddp, "
             "torch_ddp_fp16, low_level_zero, hybrid_parallel's data-parallel group). bf16: half the bytes; each "
             "rank's fp32 gradient is rounded to bf16, summed, and the sum rounded to bf16 again before the fp32 "
             "optimizer step (PyTorch DDP's bf16 compression hook does the same). gemini: fp32 only."),
      Bool(VIT_AT(plugin, cuda_graph), "true",
           "Replay each training micro-batch's forward and backward as a CUDA graph (captured on its second step "
           "with the same batch buffers): fewer launch gaps. torch_ddp / torch_ddp_fp16 on one GPU without drop "
           "path, dropout, mixup or cutmix; elsewhere the step runs as before."),
      Bool(VIT_AT(plugin, gemm_autotune), "true",
           "GPU: on the first call of each GEMM shape of at least 1 GFLOP, time cuBLASLt's single-pass candidate "
           "algorithms and keep the fastest whose output has the bits of its first choice (meant to change speed, "
           "not results). false: the first choice."),
      Bool(VIT_AT(plugin, gemm_autotune_wide), "true",
           "GPU, with gemm_autotune: also screen the first candidate's algorithm in its other single-pass "
           "configurations (every tile and custom option) and time the 8 fastest with the others, under the same "
           "bits rule. ViT-B/16 bf16 on an H200: +1.0-1.5% / +0.8-1.2% images/s at batch 32 / 256 against false; "
           "20-30 s at the start of a run whose GEMM shapes gemm_tuning_cache does not hold yet, 0.2 s when it "
           "does."),
      String(VIT_AT(plugin, gemm_tuning_cache), "auto",
             "GPU, with gemm_autotune: a file of tuning results (cuBLASLt algorithm per GPU model, cuBLASLt version "
             "and GEMM shape) read at start and written after the first step and at the end (merged, via a "
             "temporary file and a rename), so later runs skip the timing; each cached choice is still checked "
             "once against the heuristic's first answer's bits. auto = <run.output_dir>/gemm_tuning.tsv; a path: "
             "its folder must exist; empty = no cache (every run tunes)."),
      Int(VIT_AT(plugin, stage), "2", closed(1, 2),
          "low_level_zero: 1 = shard optimizer states, 2 = gradients too."),
      Int(VIT_AT(plugin, zero_stage), "0", closed(0, 1),
          "hybrid_parallel: 1 = ZeRO-1 inside the data-parallel group, 0 = off."),
      Int(VIT_AT(plugin, tp_size), "1", at_least(1),
          "hybrid_parallel: tensor-parallel ranks (Megatron 1-D); divides model.heads and model.mlp_dim."),
      Int(VIT_AT(plugin, pp_size), "1", at_least(1),
          "hybrid_parallel: pipeline stages, each holding model.depth / pp_size blocks."),
      Int(VIT_AT(plugin, num_microbatches), "1", at_least(1),
          "hybrid_parallel with pp_size > 1: micro-batches per step (1F1B); divides train.batch_size."),
      Int(VIT_AT(plugin, chunk_size_mb), "32", at_least(1), "gemini: parameter chunk size in MiB."),
      Float(VIT_AT(plugin, offload_optim_frac), "0.0", closed(0, 1),
            "gemini: fraction of optimizer states kept in pinned CPU memory (updated by CPU Adam)."),
      Float(VIT_AT(plugin, offload_param_frac), "0.0", closed(0, 1),
            "gemini: fraction of parameter chunks kept in pinned CPU memory."),
      Choice(VIT_AT(plugin, cpu_update), "auto", {"auto", "overlap", "synchronous"},
             "gemini with offload_optim_frac > 0: when the CPU AdamW of the offloaded chunks runs. overlap: on a "
             "worker thread while the next forward runs (each chunk's gather waits for its own update); "
             "synchronous: the step ends after every update; auto: overlap on a GPU, synchronous on the CPU "
             "(where both would share the same cores). Same numbers either way."),

      // --- train ---------------------------------------------------------
      Int(VIT_AT(train, epochs), "3", at_least(0),
          "Passes over the training split; ignored when train.steps > 0."),
      Int(VIT_AT(train, steps), "0", at_least(0),
          "0 = run by epochs; > 0 wins over train.epochs: training stops after exactly this many optimizer "
          "steps, over as many epochs as they take (more or fewer than train.epochs; the run says so at start)."),
      Int(VIT_AT(train, batch_size), "16", at_least(1),
          "Images per forward/backward on each data-parallel rank; an optimizer step sees "
          "batch_size x grad_accum x (data-parallel size) images."),
      Int(VIT_AT(train, grad_accum), "1", at_least(1), "Forward/backward passes accumulated per optimizer step."),
      Float(VIT_AT(train, lr), "2e-4", above(0), "Peak learning rate (before lr_scale_with_world)."),
      Bool(VIT_AT(train, lr_scale_with_world), "true",
           "Multiply lr by the data-parallel size, as the original example does."),
      Float(VIT_AT(train, weight_decay), "0.05", at_least(0),
            "AdamW decoupled weight decay, on all parameters (see no_decay_bias_norm)."),
      Float(VIT_AT(train, beta1), "0.9", closed_open(0, 1), "AdamW first-moment decay."),
      Float(VIT_AT(train, beta2), "0.999", closed_open(0, 1), "AdamW second-moment decay."),
      Float(VIT_AT(train, eps), "1e-8", above(0), "AdamW epsilon."),
      Float(VIT_AT(train, warmup_ratio), "0.3", closed(0, 1),
            "Fraction of all optimizer steps spent in linear warmup from 0."),
      Choice(VIT_AT(train, schedule), "cosine", {"cosine", "linear", "constant"},
             "Learning rate after warmup: cosine or linear decay to 0, or constant."),
      Float(VIT_AT(train, grad_clip), "0.0", at_least(0), "Clip the global gradient norm to this; 0 = off."),
      Bool(VIT_AT(train, recompute), "false",
           "Recompute block activations during backward instead of storing them (less memory)."),
      Bool(VIT_AT(train, recompute_gelu), "false",
           "Keep only the MLP's values before GELU and make the GELU output again during backward, in the "
           "GELU backward pass: a quarter less activation memory per block for ~2% more time; the same "
           "gradients, bit for bit."),
      Bool(VIT_AT(train, recompute_norm), "false",
           "Keep no LayerNorm outputs of the blocks: make LN1's and LN2's outputs again during backward from "
           "their kept inputs and statistics (two LayerNorm passes more per block), 2 x (batch, tokens, "
           "hidden) less activation memory per block; the same gradients, bit for bit."),
      Int(VIT_AT(train, max_nonfinite_steps), "5", at_least(1),
          "Consecutive steps with a NaN/Inf loss or gradient norm (skipped, like an fp16 overflow) after which "
          "the run stops as failed; with fp16 only those at plugin.min_scale count."),
      Float(VIT_AT(train, label_smoothing), "0.0", closed_open(0, 1),
            "Label smoothing of the training loss: target (1 - eps) onehot + eps / num_classes."),
      Float(VIT_AT(train, ema_decay), "0.0", closed_open(0, 1),
            "Keep an exponential moving average of the weights (e.g. 0.999); evaluated and exported instead "
            "of the raw weights. 0 = off."),
      Float(VIT_AT(train, layer_decay), "1.0", open_closed(0, 1),
            "Layer-wise lr decay for fine-tuning: block l trains at lr x layer_decay^(depth - l), the "
            "embeddings at lr x layer_decay^(depth + 1), the head at lr. 1 = off."),
      Bool(VIT_AT(train, no_decay_bias_norm), "false",
           "No weight decay on biases, LayerNorm weights, class token and position embeddings "
           "(false: decay everything, as the original example)."),

      // --- eval ----------------------------------------------------------
      Bool(VIT_AT(eval, enabled), "true", "Evaluate loss and accuracy on data.eval_split during training."),
      Int(VIT_AT(eval, every_epochs), "1", at_least(1), "Epochs between evaluations."),
      Int(VIT_AT(eval, batch_size), "32", at_least(1),
          "Images per data-parallel rank per evaluation step (run through the model in chunks of at most "
          "train.batch_size: activations are sized by training)."),
      Bool(VIT_AT(eval, test_at_end), "true", "Evaluate data.test_split once after training."),
      Bool(VIT_AT(eval, keep_best), "false",
           "Keep the weights of the epoch with the best validation accuracy; test them too (after the last "
           "epoch's) and export them."),

      // --- benchmark -----------------------------------------------------
      Bool(VIT_AT(benchmark, enabled), "false",
           "Synthetic images, no evaluation: measure throughput and peak memory instead of training."),
      Int(VIT_AT(benchmark, warmup_steps), "5", at_least(0), "Steps run before timing starts (not measured)."),
      Int(VIT_AT(benchmark, steps), "20", at_least(1), "Measured steps."),
      Bool(VIT_AT(benchmark, profile), "false",
           "After the measured steps, time every op in up to 5 more (GPU events) and measure the GEMM ceiling; "
           "the breakdown goes to the log and the metrics (\"profile\" lines)."),

      // --- checkpoint ----------------------------------------------------
      String(VIT_AT(checkpoint, dir), "",
             "Folder of training-state checkpoints (docs/checkpoints.md); empty = none. With a folder, one is "
             "also saved at the end and when a stop signal (SIGTERM, SIGINT, SIGUSR1) arrives."),
      Int(VIT_AT(checkpoint, every_steps), "0", at_least(0), "Save every N optimizer steps; 0 = not by steps."),
      Int(VIT_AT(checkpoint, every_epochs), "0", at_least(0), "Save after every N epochs; 0 = not by epochs."),
      Int(VIT_AT(checkpoint, keep_last), "2", at_least(1),
          "Complete checkpoints kept; older ones are removed once a newer one is in place."),
      Choice(VIT_AT(checkpoint, resume), "auto", {"auto", "true", "false"},
             "auto: continue from the newest complete checkpoint in dir when there is one; true: it must exist; "
             "false: start afresh (dir must hold no checkpoint)."),
      Bool(VIT_AT(checkpoint, continue_on_error), "false",
           "A checkpoint that cannot be written (disk full) is reported and training goes on; false: the run "
           "stops as failed. The previous checkpoint stays intact either way."),
      Int(VIT_AT(checkpoint, stop_after_steps), "0", at_least(0),
          "Save and stop (exit status 75, resumable) after this many steps of this run; 0 = run to the end."),
      String(VIT_AT(checkpoint, export_hf), "",
             "Folder to write a Hugging Face model.safetensors + config.json after training; empty = none. "
             "Checked before training: its parent folder must exist and be writable. If writing fails after "
             "training, the model goes to <output_dir>/<name>/export_hf instead and the run says so."),
      Bool(VIT_AT(checkpoint, overwrite_export), "false",
           "Replace an earlier export in checkpoint.export_hf (refused before training when false)."),
  };
}

#undef VIT_AT

}  // namespace

const std::vector<FieldInfo>& spec_schema() {
  static const std::vector<FieldInfo> schema = build_schema();
  return schema;
}

const std::vector<std::string>& spec_sections() {
  static const std::vector<std::string> sections = [] {
    std::vector<std::string> out;
    for (const FieldInfo& f : spec_schema()) {
      if (out.empty() || out.back() != f.section()) out.push_back(f.section());
    }
    return out;
  }();
  return sections;
}

}  // namespace vit
