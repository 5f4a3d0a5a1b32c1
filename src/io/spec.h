// The experiment spec: one YAML file describes one run (DESIGN.md section 5).
//
// ExperimentSpec is a plain struct whose nested member names equal the YAML
// keys, so code reads `spec.train.lr` where the file says `train: {lr: ...}`.
// Defaults, types, ranges and the one-line meaning of every field are NOT
// written here: they live in ONE table, the schema in spec_schema.cpp, which
// drives parsing, defaults, validation, `vit_hpc --print-spec` and the
// resolved-spec printout. A default-constructed ExperimentSpec carries the
// schema's defaults (the constructor applies them), so the header and the
// table cannot disagree.
//
// Validation has two layers:
//   load_spec()        every field (unknown key with the nearest valid name,
//                      wrong type, out of range, bad choice) and the
//                      cross-field rules that need no world size;
//   validate_layout()  the cross-field rules again plus the ones that need
//                      the number of ranks (tp x pp divides the world).
// Both collect ALL problems and throw one vit::UserError whose message has
// one line per problem, each shaped
//     <where>: <dotted.field>: <what is wrong> (<what is allowed>)
// where <where> is `file:line` for a value from the file, `--set a.b=v` for
// an override, and the bare file name for a field left at its default.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace vit {

struct RunSpec {
  std::string name;
  int seed = 0;
  std::string output_dir;
  std::string device;  // auto | cpu | cuda
  int cpu_threads = 0;
  int log_every = 0;
  bool progress = false;
  double collective_timeout_s = 0;
};

struct DataSpec {
  std::string path;
  std::string train_split;
  std::string eval_split;
  std::string test_split;
  bool augment = false;
  double crop_scale_min = 0;
  double crop_ratio_min = 0;
  double crop_ratio_max = 0;
  bool hflip = false;
  std::string auto_augment;  // none | trivial | rand
  int rand_ops = 0;
  int rand_magnitude = 0;
  double random_erase = 0;
  double mixup_alpha = 0;
  double cutmix_alpha = 0;
  double mix_prob = 0;
  double mix_switch_prob = 0;
  int prefetch = 0;
  int loader_threads = 0;
  bool drop_last = false;
  bool verify_checksum = false;
};

struct ModelSpec {
  int image_size = 0;
  int patch_size = 0;
  int channels = 0;
  int hidden = 0;
  int depth = 0;
  int heads = 0;
  int mlp_dim = 0;
  int num_classes = 0;
  double layernorm_eps = 0;
  double init_std = 0;
  std::string pretrained;
  std::string attention;  // cudnn | cublas
  bool attention_deterministic = true;
  std::string attention_backward;  // auto | mma | cudnn
  std::string attention_forward;   // auto | cudnn
  double drop_path = 0;
  double hidden_dropout = 0;
  bool pretrained_dropout = false;
};

struct PluginSpec {
  std::string name;       // torch_ddp | torch_ddp_fp16 | low_level_zero | gemini | hybrid_parallel
  std::string precision;  // fp32 | bf16 | fp16
  bool tf32 = false;
  double initial_scale = 0;
  double growth_factor = 0;
  double backoff_factor = 0;
  int growth_interval = 0;
  int hysteresis = 0;
  double min_scale = 0;
  double max_scale = 0;
  int bucket_mb = 0;
  bool overlap_comm = false;
  std::string reduce_dtype;  // fp32 | bf16: the data-parallel gradient collectives
  bool cuda_graph = false;
  bool gemm_autotune = false;
  bool gemm_autotune_wide = false;
  std::string gemm_tuning_cache;  // file of cuBLASLt tuning results; "" = none
  int stage = 0;
  int zero_stage = 0;
  int tp_size = 0;
  int pp_size = 0;
  int num_microbatches = 0;
  int chunk_size_mb = 0;
  double offload_optim_frac = 0;
  double offload_param_frac = 0;
  std::string cpu_update;  // auto | overlap | synchronous (gemini)
};

struct TrainSpec {
  int epochs = 0;
  int steps = 0;
  int batch_size = 0;
  int grad_accum = 0;
  double lr = 0;
  bool lr_scale_with_world = false;
  double weight_decay = 0;
  double beta1 = 0;
  double beta2 = 0;
  double eps = 0;
  double warmup_ratio = 0;
  std::string schedule;  // cosine | linear | constant
  double grad_clip = 0;
  bool recompute = false;
  bool recompute_gelu = false;
  bool recompute_norm = false;
  int max_nonfinite_steps = 0;
  double label_smoothing = 0;
  double ema_decay = 0;
  double layer_decay = 0;
  bool no_decay_bias_norm = false;
};

struct EvalSpec {
  bool enabled = false;
  int every_epochs = 0;
  int batch_size = 0;
  bool test_at_end = false;
  bool keep_best = false;
};

struct BenchmarkSpec {
  bool enabled = false;
  int warmup_steps = 0;
  int steps = 0;
  bool profile = false;
};

struct CheckpointSpec {
  std::string dir;
  int every_steps = 0;
  int every_epochs = 0;
  int keep_last = 0;
  std::string resume;  // auto | true | false
  bool continue_on_error = false;
  int stop_after_steps = 0;
  std::string export_hf;
  bool overwrite_export = false;
};

// Where each value came from, for messages: not a YAML section.
struct SpecOrigin {
  std::string file;                          // the spec file; "" when none was given
  std::map<std::string, std::string> where;  // dotted path -> "file:line" or "--set a.b=v"

  // "file:line" / "--set a.b=v" for a field that was set, else the file name
  // (or "<defaults>" without a file).
  std::string locate(const std::string& dotted_path) const;
};

struct ExperimentSpec {
  RunSpec run;
  DataSpec data;
  ModelSpec model;
  PluginSpec plugin;
  TrainSpec train;
  EvalSpec eval;
  BenchmarkSpec benchmark;
  CheckpointSpec checkpoint;
  SpecOrigin origin;

  ExperimentSpec();  // every field at its schema default
};

// ---------------------------------------------------------------------------
// Loading and validation
// ---------------------------------------------------------------------------

// Reads `path` (empty: start from the defaults alone; a folder is refused),
// then applies each override "section.field=value" in order (later wins),
// then checks every field and the cross-field rules that need no world size.
// Throws vit::UserError listing every problem, one per line; a YAML syntax
// error caused by a tab in the indentation names the tab (file:line:column).
ExperimentSpec load_spec(const std::string& path, const std::vector<std::string>& overrides);

// Same, from YAML text; `file_label` names the source in messages.
ExperimentSpec load_spec_text(const std::string& yaml_text, const std::string& file_label,
                              const std::vector<std::string>& overrides);

// The cross-field rules (plugin options used without their plugin, sizes
// that do not divide) and the layout for `world_size` ranks: tp_size x
// pp_size divides the world, heads and mlp_dim divisible by tp_size, depth
// divisible by pp_size (every stage holds the same number of blocks),
// num_microbatches divides the batch. Throws vit::UserError as load_spec.
void validate_layout(const ExperimentSpec& spec, int world_size);

// ---------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------

// Every field with its value, as YAML that load_spec reads back to the same
// spec. Fields that were set (not defaults) carry a comment saying where.
std::string resolved_yaml(const ExperimentSpec& spec);

// The schema for `vit_hpc --print-spec`: a commented YAML file of every
// field at its default, with type, allowed values and meaning. Loadable.
std::string print_schema();

// {"run": {"name": ..., ...}, "data": {...}, ...}: every field (no origins);
// the manifest embeds it.
nlohmann::json spec_to_json(const ExperimentSpec& spec);

// ---------------------------------------------------------------------------
// The schema table (spec_schema.cpp), for code that walks every field
// ---------------------------------------------------------------------------

enum class FieldType {
  Int,     // int; optional range
  Float,   // double; optional range
  Bool,    // true/false (also yes/no, on/off)
  String,  // any text (paths)
  Name,    // letters, digits, '.', '_', '-' (run names, HDF5 group names)
  Choice,  // one of a fixed list of words
};
const char* field_type_name(FieldType type);

// Allowed interval for Int and Float fields; infinite ends mean unbounded.
struct FieldRange {
  double lo;
  double hi;
  bool lo_open;
  bool hi_open;

  bool contains(double v) const;
  std::string describe(bool integer) const;  // "> 0", ">= 1", "[0, 1)", "1 to 2"
};

struct FieldInfo {
  const char* path;                      // "section.key"
  FieldType type;
  void* (*at)(ExperimentSpec&);          // the member this field fills
  const char* default_text;              // YAML text, parsed like a user's value
  FieldRange range;                      // Int, Float
  std::vector<std::string> choices;      // Choice
  const char* meaning;

  std::string section() const;           // "train"
  std::string key() const;               // "lr"
};

// Every field, grouped by section in the order of DESIGN.md section 5.
const std::vector<FieldInfo>& spec_schema();
// The section names in order: run, data, model, plugin, train, eval, benchmark, checkpoint.
const std::vector<std::string>& spec_sections();
// nullptr when no field has this dotted path.
const FieldInfo* find_field(const std::string& dotted_path);

}  // namespace vit
