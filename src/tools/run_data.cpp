// Loading run folders (see run_data.h).
//
// Messages follow one pattern: "<file>[:<line>]: <what is wrong> (<what is
// allowed>)". JSON syntax errors report the line (and column) where the
// parser stopped; nlohmann gives a byte offset for the whole-file manifest,
// turned here into a line and column. Numbers that may legitimately be NaN
// or infinite (losses after an fp16 overflow, say) arrive as JSON null,
// because JSON has no NaN and nlohmann writes non-finite doubles as null:
// those fields accept null and read it as NaN.
#include "tools/run_data.h"

#include "io/run_liveness.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <ostream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace vit::tools {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kFormatVersion = 1;

// Where a JSON value was read: "<file>" or "<file>:<line>".
struct Origin {
  std::string file;
  int64_t line = 0;  // 0: the whole file (manifest.json)
  std::string where() const { return line > 0 ? str_cat(file, ":", line) : file; }
};

// nlohmann's message starts "[json.exception.parse_error.101] parse error at
// line 1, column 5: "; the part after the first ": " is the useful one.
std::string parse_error_reason(const json::parse_error& e) {
  const std::string what = e.what();
  const auto colon = what.find(": ");
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

// Line and column (1-based) of byte offset `byte` (1-based, as nlohmann counts).
std::pair<int64_t, int64_t> line_and_column(const std::string& text, size_t byte) {
  const size_t end = std::min(byte == 0 ? 0 : byte - 1, text.size());
  int64_t line = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < end; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return {line, static_cast<int64_t>(end - line_start) + 1};
}

std::string read_whole_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(str_cat(path.string(), ": cannot read: ", std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw UserError(str_cat(path.string(), ": read error"));
  return text.str();
}

const json& field(const json& obj, const char* name, const Origin& at, const char* context) {
  const auto it = obj.find(name);
  if (it == obj.end()) {
    throw UserError(str_cat(at.where(), ": field \"", name, "\" missing in ", context, " (docs/metrics.md)"));
  }
  return *it;
}

[[noreturn]] void wrong_type(const char* name, const json& value, const Origin& at, const char* expected) {
  throw UserError(str_cat(at.where(), ": field \"", name, "\" must be ", expected, ", got ", value.dump()));
}

int64_t get_int(const json& obj, const char* name, const Origin& at, const char* context) {
  const json& v = field(obj, name, at, context);
  if (!v.is_number_integer()) wrong_type(name, v, at, "an integer");
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    wrong_type(name, v, at, "an integer below 2^63");
  }
  return v.get<int64_t>();
}

int get_small_int(const json& obj, const char* name, const Origin& at, const char* context) {
  const int64_t v = get_int(obj, name, at, context);
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
    wrong_type(name, obj.at(name), at, "an integer of at most 10 digits");
  }
  return static_cast<int>(v);
}

double get_number(const json& obj, const char* name, const Origin& at, const char* context) {
  const json& v = field(obj, name, at, context);
  if (v.is_null()) return std::numeric_limits<double>::quiet_NaN();
  if (!v.is_number()) wrong_type(name, v, at, "a number (or null for NaN)");
  return v.get<double>();
}

std::string get_string(const json& obj, const char* name, const Origin& at, const char* context) {
  const json& v = field(obj, name, at, context);
  if (!v.is_string()) wrong_type(name, v, at, "a string");
  return v.get<std::string>();
}

std::string get_optional_string(const json& obj, const char* name, const Origin& at) {
  const auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return {};
  if (!it->is_string()) wrong_type(name, *it, at, "a string");
  return it->get<std::string>();
}

const json& get_object(const json& obj, const char* name, const Origin& at, const char* context) {
  const json& v = field(obj, name, at, context);
  if (!v.is_object()) wrong_type(name, v, at, "an object");
  return v;
}

std::string one_of(const json& obj, const char* name, const Origin& at, const char* context,
                   std::initializer_list<const char*> allowed) {
  const std::string v = get_string(obj, name, at, context);
  for (const char* a : allowed) {
    if (v == a) return v;
  }
  std::string list;
  for (const char* a : allowed) list += str_cat(list.empty() ? "" : ", ", "\"", a, "\"");
  throw UserError(str_cat(at.where(), ": field \"", name, "\" is \"", v, "\" (allowed: ", list, ")"));
}

// rank_<r>.jsonl -> r, or -1 for any other name.
int rank_of_file_name(const std::string& name) {
  static const std::string prefix = "rank_", suffix = ".jsonl";
  if (name.size() <= prefix.size() + suffix.size()) return -1;
  if (name.compare(0, prefix.size(), prefix) != 0) return -1;
  if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return -1;
  const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return -1;
  }
  if (digits.size() > 1 && digits[0] == '0') return -1;  // rank_01 is not a rank file
  return std::stoi(digits);
}

std::set<int> rank_files_in(const fs::path& dir) {
  std::set<int> ranks;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const int r = rank_of_file_name(entry.path().filename().string());
    if (r >= 0) ranks.insert(r);
  }
  return ranks;
}

void read_manifest(const fs::path& dir, Run& run) {
  const fs::path path = dir / "manifest.json";
  const std::string text = read_whole_file(path);
  json m;
  try {
    m = json::parse(text);
  } catch (const json::parse_error& e) {
    const auto [line, column] = line_and_column(text, e.byte);
    throw UserError(str_cat(path.string(), ":", line, ":", column, ": malformed JSON: ", parse_error_reason(e)));
  }
  const Origin at{path.string(), 0};
  if (!m.is_object()) throw UserError(str_cat(at.where(), ": must hold one JSON object"));
  const char* ctx = "manifest.json";

  const int64_t format = get_int(m, "format", at, ctx);
  if (format != kFormatVersion) {
    throw UserError(str_cat(at.where(), ": field \"format\" is ", format, "; this vit_results reads format ",
                            kFormatVersion));
  }
  run.name = get_string(m, "run", at, ctx);
  if (run.name.empty()) throw UserError(str_cat(at.where(), ": field \"run\" is empty"));
  run.mode = one_of(m, "mode", at, ctx, {"train", "benchmark"});
  const std::string status = one_of(m, "status", at, ctx, {"running", "completed", "failed", "interrupted"});
  run.status = status == "running" ? RunStatus::running
               : status == "completed" ? RunStatus::completed
               : status == "interrupted" ? RunStatus::interrupted
                                       : RunStatus::failed;
  if (run.status == RunStatus::failed) run.error = get_string(m, "error", at, ctx);
  if (run.status == RunStatus::interrupted) {
    const json& why = get_object(m, "interrupted", at, ctx);
    const std::string checkpoint = why.value("checkpoint", "");
    run.error = str_cat("interrupted by ", why.value("by", "?"), " after step ", why.value("step", int64_t{0}),
                        checkpoint.empty() ? std::string("; no checkpoint") : str_cat("; resumes from ", checkpoint));
  }
  const json& spec = get_object(m, "spec", at, ctx);
  if (const auto train = spec.find("train"); train != spec.end() && train->is_object()) {
    const char* sctx = "manifest.json \"spec\" \"train\"";
    if (train->contains("epochs")) run.spec_epochs = get_int(*train, "epochs", at, sctx);
    if (train->contains("steps")) run.spec_steps = get_int(*train, "steps", at, sctx);
  }

  const json& world = get_object(m, "world", at, ctx);
  const char* wctx = "manifest.json \"world\"";
  WorldLayout& w = run.world;
  w.size = get_small_int(world, "size", at, wctx);
  w.dp = get_small_int(world, "dp", at, wctx);
  w.tp = get_small_int(world, "tp", at, wctx);
  w.pp = get_small_int(world, "pp", at, wctx);
  w.nodes = get_small_int(world, "nodes", at, wctx);
  w.ranks_per_node = get_small_int(world, "ranks_per_node", at, wctx);
  w.device = one_of(world, "device", at, wctx, {"cpu", "cuda"});
  w.communicator = one_of(world, "communicator", at, wctx, {"nccl", "mpi"});
  if (w.size < 1 || w.dp < 1 || w.tp < 1 || w.pp < 1 || w.nodes < 1 || w.ranks_per_node < 1) {
    throw UserError(str_cat(at.where(), ": \"world\" sizes must be at least 1"));
  }
  if (static_cast<int64_t>(w.dp) * w.tp * w.pp != w.size) {
    throw UserError(str_cat(at.where(), ": \"world\" dp x tp x pp = ", w.dp, " x ", w.tp, " x ", w.pp,
                            " does not equal size ", w.size));
  }
  if (static_cast<int64_t>(w.nodes) * w.ranks_per_node != w.size) {
    throw UserError(str_cat(at.where(), ": \"world\" nodes x ranks_per_node = ", w.nodes, " x ",
                            w.ranks_per_node, " does not equal size ", w.size));
  }

  run.plugin = get_string(m, "plugin", at, ctx);
  run.plugin_variant = get_optional_string(m, "plugin_variant", at);
  run.precision = one_of(m, "precision", at, ctx, {"fp32", "bf16", "fp16"});
  run.global_batch = get_int(m, "global_batch", at, ctx);

  const json& hw = get_object(m, "hardware", at, ctx);
  const char* hctx = "manifest.json \"hardware\"";
  run.host = get_string(hw, "host", at, hctx);
  run.cpu = get_string(hw, "cpu", at, hctx);
  get_int(hw, "cpu_threads", at, hctx);
  run.gpu_name = get_optional_string(hw, "gpu_name", at);
  if (hw.contains("gpu_memory_bytes")) run.gpu_memory_bytes = get_int(hw, "gpu_memory_bytes", at, hctx);

  run.git_revision = get_string(m, "git_revision", at, ctx);
  run.start_time = get_string(m, "start_time", at, ctx);
  const json& end = field(m, "end_time", at, ctx);
  if (end.is_null()) {
    if (run.status != RunStatus::running) {
      throw UserError(str_cat(at.where(), ": field \"end_time\" is null but status is \"", status, "\""));
    }
  } else {
    run.end_time = get_string(m, "end_time", at, ctx);
  }
  // "running" in the file, but its process is gone (io/run_liveness.h).
  if (run.status == RunStatus::running) {
    const io::LivenessReport live = io::run_liveness(m);
    if (live.state == io::Liveness::Dead) {
      run.status = RunStatus::died;
      run.error = str_cat("died: the manifest says \"running\" but ", live.why);
    }
  }
}

// What one rank file holds, for the checks across ranks.
struct RankFile {
  std::string path;
  std::vector<EpochRecord> epochs;
  std::vector<int64_t> epoch_lines;
  std::vector<std::pair<EvalRecord, int64_t>> evals;  // with their line
  std::vector<StepLoss> step_losses;
  int64_t max_peak_mem = 0;
  std::optional<BenchmarkRecord> benchmark;
  int64_t benchmark_line = 0;
  std::vector<ProfileRecord> profile;
};

RankFile read_rank_file(const fs::path& path) {
  RankFile rf;
  rf.path = path.string();
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UserError(str_cat(rf.path, ": cannot read: ", std::strerror(errno)));
  std::string text;
  int64_t line_no = 0;
  while (std::getline(in, text)) {
    ++line_no;
    if (std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isspace(c); })) continue;
    const Origin at{rf.path, line_no};
    json j;
    try {
      j = json::parse(text);
    } catch (const json::parse_error& e) {
      const auto col = line_and_column(text, e.byte).second;
      throw UserError(str_cat(at.where(), ":", col, ": malformed JSON: ", parse_error_reason(e)));
    }
    if (!j.is_object()) throw UserError(str_cat(at.where(), ": each line must be one JSON object"));
    const std::string type = get_string(j, "type", at, "a metrics line");
    if (type == "step") {
      const char* ctx = "a \"step\" line";
      StepLoss s;
      s.step = get_int(j, "step", at, ctx);
      get_int(j, "epoch", at, ctx);
      s.loss = get_number(j, "loss", at, ctx);
      const int64_t peak = get_int(j, "peak_mem", at, ctx);
      rf.max_peak_mem = std::max(rf.max_peak_mem, peak);
      rf.step_losses.push_back(s);
    } else if (type == "epoch") {
      const char* ctx = "an \"epoch\" line";
      EpochRecord e;
      e.epoch = get_small_int(j, "epoch", at, ctx);
      e.steps = get_int(j, "steps", at, ctx);
      e.avg_loss = get_number(j, "avg_loss", at, ctx);
      e.it_per_s = get_number(j, "it_per_s", at, ctx);
      e.images_per_s = get_number(j, "images_per_s", at, ctx);
      e.time = get_number(j, "time", at, ctx);
      rf.epochs.push_back(e);
      rf.epoch_lines.push_back(line_no);
    } else if (type == "eval") {
      const char* ctx = "an \"eval\" line";
      EvalRecord e;
      e.split = one_of(j, "split", at, ctx, {"validation", "test"});
      if (j.contains("weights")) e.weights = one_of(j, "weights", at, ctx, {"last", "ema", "best"});
      e.epoch = get_small_int(j, "epoch", at, ctx);
      e.loss = get_number(j, "loss", at, ctx);
      e.accuracy = get_number(j, "accuracy", at, ctx);
      e.count = get_int(j, "count", at, ctx);
      rf.evals.emplace_back(e, line_no);
    } else if (type == "profile") {
      const char* ctx = "a \"profile\" line";
      ProfileRecord p;
      p.op = get_string(j, "op", at, ctx);
      p.ms_per_step = get_number(j, "ms_per_step", at, ctx);
      p.calls_per_step = get_number(j, "calls_per_step", at, ctx);
      p.share = get_number(j, "share", at, ctx);
      if (j.contains("tflops")) p.tflops = get_number(j, "tflops", at, ctx);
      if (j.contains("tbps")) p.tbps = get_number(j, "tbps", at, ctx);
      rf.profile.push_back(p);
    } else if (type == "benchmark") {
      const char* ctx = "a \"benchmark\" line";
      if (rf.benchmark) {
        throw UserError(str_cat(at.where(), ": a second \"benchmark\" line (the first is line ", rf.benchmark_line,
                                "; a run has one)"));
      }
      BenchmarkRecord b;
      b.batch_size = get_int(j, "batch_size", at, ctx);
      b.global_batch = get_int(j, "global_batch", at, ctx);
      b.warmup_steps = get_int(j, "warmup_steps", at, ctx);
      b.steps = get_int(j, "steps", at, ctx);
      b.images_per_s = get_number(j, "images_per_s", at, ctx);
      b.it_per_s = get_number(j, "it_per_s", at, ctx);
      b.step_time_median = get_number(j, "step_time_median", at, ctx);
      b.max_peak_mem = get_int(j, "peak_mem", at, ctx);
      if (j.contains("model_tflops_per_gpu")) b.model_tflops_per_gpu = get_number(j, "model_tflops_per_gpu", at, ctx);
      if (j.contains("matrix_ceiling_tflops")) b.matrix_ceiling_tflops = get_number(j, "matrix_ceiling_tflops", at, ctx);
      if (j.contains("memory_ceiling_tbps")) b.memory_ceiling_tbps = get_number(j, "memory_ceiling_tbps", at, ctx);
      if (j.contains("gpu_energy_j")) {  // this rank's figures, until assemble_benchmark combines the ranks
        b.power = true;
        b.energy_j = get_number(j, "gpu_energy_j", at, ctx);
        b.power_w = get_number(j, "gpu_power_w", at, ctx);
        b.power_limit_w = get_number(j, "gpu_power_limit_w", at, ctx);
        b.sm_clock_mhz = get_number(j, "sm_clock_mhz", at, ctx);
        b.sm_clock_max_mhz = get_number(j, "sm_clock_max_mhz", at, ctx);
        b.power_capped_share = get_number(j, "power_capped_share", at, ctx);
        if (j.contains("energy_counter_span_s")) b.power_span_s = get_number(j, "energy_counter_span_s", at, ctx);
      }
      rf.benchmark = b;
      rf.benchmark_line = line_no;
    }
    // Other types are for other readers (a later format may add some).
  }
  if (in.bad()) throw UserError(str_cat(rf.path, ": read error"));
  return rf;
}

// A benchmark field that must be the same on every rank.
void check_same(const RankFile& rank0, const RankFile& other, const char* name, int64_t a, int64_t b) {
  if (a != b) {
    throw UserError(str_cat(other.path, ":", other.benchmark_line, ": benchmark ", name, " ", b,
                            " disagrees with ", rank0.path, ":", rank0.benchmark_line, " (", a, ")"));
  }
}

void assemble_benchmark(Run& run, const std::vector<RankFile>& ranks) {
  for (const RankFile& rf : ranks) {
    if (!rf.benchmark) {
      throw UserError(str_cat(rf.path, ": no \"benchmark\" line, but manifest.json says mode \"benchmark\" and "
                              "status \"completed\""));
    }
  }
  const RankFile& r0 = ranks.front();
  BenchmarkRecord b = *r0.benchmark;  // global figures: rank 0's
  b.profile = r0.profile;
  for (const RankFile& rf : ranks) {
    const BenchmarkRecord& o = *rf.benchmark;
    check_same(r0, rf, "batch_size", b.batch_size, o.batch_size);
    check_same(r0, rf, "global_batch", b.global_batch, o.global_batch);
    check_same(r0, rf, "warmup_steps", b.warmup_steps, o.warmup_steps);
    check_same(r0, rf, "steps", b.steps, o.steps);
    b.max_peak_mem = std::max(b.max_peak_mem, o.max_peak_mem);
  }
  // Power: every rank's, or none.
  b.power = std::all_of(ranks.begin(), ranks.end(), [](const RankFile& rf) { return rf.benchmark->power; });
  if (b.power) {
    b.energy_j = b.power_w = 0;
    for (const RankFile& rf : ranks) {
      const BenchmarkRecord& o = *rf.benchmark;
      b.energy_j += o.energy_j;
      b.power_w += o.power_w / static_cast<double>(ranks.size());
      b.power_limit_w = std::max(b.power_limit_w, o.power_limit_w);
      b.sm_clock_mhz = std::min(b.sm_clock_mhz, o.sm_clock_mhz);
      b.sm_clock_max_mhz = std::max(b.sm_clock_max_mhz, o.sm_clock_max_mhz);
      b.power_capped_share = std::max(b.power_capped_share, o.power_capped_share);
      b.power_span_s = std::min(b.power_span_s, o.power_span_s);
    }
  }
  if (b.global_batch != run.global_batch) {
    throw UserError(str_cat(r0.path, ":", r0.benchmark_line, ": benchmark global_batch ", b.global_batch,
                            " disagrees with ", (run.dir / "manifest.json").string(), " (", run.global_batch, ")"));
  }
  run.benchmark = b;
}

void assemble_training(Run& run, const std::vector<RankFile>& ranks) {
  const RankFile& r0 = ranks.front();
  // No epoch line is right only for a run that asked for none (train.epochs 0,
  // train.steps 0: the test split evaluated, nothing trained).
  const bool asked_for_no_epochs = run.spec_epochs == 0 && run.spec_steps <= 0;
  if (r0.epochs.empty() && !asked_for_no_epochs) {
    throw UserError(str_cat(r0.path, ": no \"epoch\" line, but manifest.json says mode \"train\" and status "
                            "\"completed\" (and its spec asks for train.epochs ", run.spec_epochs, ")"));
  }
  for (size_t i = 0; i < r0.epochs.size(); ++i) {
    if (r0.epochs[i].epoch != static_cast<int>(i) + 1) {
      throw UserError(str_cat(r0.path, ":", r0.epoch_lines[i], ": epoch ", r0.epochs[i].epoch, " where epoch ",
                              i + 1, " was expected (epoch lines count up from 1, one per epoch)"));
    }
  }
  run.epochs = r0.epochs;
  const int last_epoch = static_cast<int>(run.epochs.size());
  // The last validation of each epoch is the one taken after it ended.
  std::map<int, EvalRecord> validation;
  for (const auto& [e, line] : r0.evals) {
    if (e.epoch < 0 || e.epoch > last_epoch) {
      throw UserError(str_cat(r0.path, ":", line, ": eval after epoch ", e.epoch, ", but the run has epochs 1 to ",
                              last_epoch));
    }
    if (e.split == "validation") {
      validation[e.epoch] = e;
    } else if (e.weights == "best") {
      run.best_test = e;
    } else {
      run.test = e;
    }
  }
  for (const auto& [epoch, e] : validation) run.validation.push_back(e);
  run.step_losses = r0.step_losses;
  for (const RankFile& rf : ranks) run.max_step_peak_mem = std::max(run.max_step_peak_mem, rf.max_peak_mem);
}

bool run_less(const Run& a, const Run& b) {
  if (a.name != b.name) return a.name < b.name;
  return a.dir.string() < b.dir.string();
}

}  // namespace

namespace {

// A folder that was meant to be a run but has no manifest: it holds rank
// files, or the temporary a manifest write left (a disk full at start).
bool looks_like_run_without_manifest(const fs::path& dir) {
  if (!rank_files_in(dir).empty()) return true;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().rfind("manifest.json.tmp", 0) == 0) return true;
  }
  return false;
}

}  // namespace

std::vector<fs::path> find_run_folders(const std::vector<fs::path>& paths, std::vector<std::string>& warnings,
                                       bool strict, std::vector<fs::path>* damaged) {
  std::vector<fs::path> found;
  std::set<std::string> seen;  // canonical paths, so a run named twice counts once
  const auto add = [&](const fs::path& dir) {
    if (seen.insert(fs::weakly_canonical(dir).string()).second) found.push_back(dir);
  };
  const auto without_manifest = [&](const fs::path& dir) {
    const std::string what = str_cat((dir / "manifest.json").string(),
                                     ": missing (the folder holds rank files or a manifest's temporary, so it is a "
                                     "run folder without its manifest)");
    if (strict) throw UserError(what);
    if (!seen.insert(fs::weakly_canonical(dir).string()).second) return;
    warnings.push_back(what + ": skipped (vit_results --strict makes this an error)");
    if (damaged) damaged->push_back(dir);
  };
  try {
    for (const fs::path& p : paths) {
      const auto st = fs::status(p);
      if (!fs::exists(st)) throw UserError(str_cat(p.string(), ": no such file or folder"));
      if (!fs::is_directory(st)) {
        warnings.push_back(str_cat(p.string(), ": not a folder: ignored"));
        continue;
      }
      if (fs::exists(p / "manifest.json")) {
        add(p);
        continue;
      }
      std::vector<fs::path> subdirs;
      for (const auto& entry : fs::directory_iterator(p)) {
        if (entry.is_directory()) subdirs.push_back(entry.path());
      }
      std::sort(subdirs.begin(), subdirs.end());
      bool any = false;
      for (const fs::path& sub : subdirs) {
        if (fs::exists(sub / "manifest.json")) {
          add(sub);
          any = true;
        } else if (looks_like_run_without_manifest(sub)) {
          without_manifest(sub);
          any = true;
        }
      }
      if (!any) {
        if (looks_like_run_without_manifest(p)) {
          without_manifest(p);
          continue;
        }
        warnings.push_back(str_cat(p.string(), ": no run folder in it (none holds manifest.json): ignored"));
      }
    }
  } catch (const fs::filesystem_error& e) {
    throw UserError(str_cat(e.path1().string(), ": ", e.code().message()));
  }
  std::sort(found.begin(), found.end());
  return found;
}

Run load_run(const fs::path& dir) {
  Run run;
  run.dir = dir;
  read_manifest(dir, run);
  if (run.status != RunStatus::completed) return run;

  std::set<int> ranks;
  try {
    ranks = rank_files_in(dir);
  } catch (const fs::filesystem_error& e) {
    throw UserError(str_cat(dir.string(), ": ", e.code().message()));
  }
  for (int r = 0; r < run.world.size; ++r) {
    if (!ranks.count(r)) {
      throw UserError(str_cat((dir / str_cat("rank_", r, ".jsonl")).string(), ": missing (manifest.json says world "
                              "size ", run.world.size, ", so rank_0.jsonl to rank_", run.world.size - 1,
                              ".jsonl must exist)"));
    }
  }
  if (!ranks.empty() && *ranks.rbegin() >= run.world.size) {
    throw UserError(str_cat((dir / str_cat("rank_", *ranks.rbegin(), ".jsonl")).string(),
                            ": present, but manifest.json says world size ", run.world.size));
  }
  std::vector<RankFile> files;
  files.reserve(run.world.size);
  for (int r = 0; r < run.world.size; ++r) files.push_back(read_rank_file(dir / str_cat("rank_", r, ".jsonl")));

  if (run.mode == "benchmark") {
    assemble_benchmark(run, files);
  } else {
    assemble_training(run, files);
  }
  return run;
}

RunSet load_runs(const std::vector<fs::path>& paths, std::ostream* warnings_now, bool strict) {
  RunSet set;
  size_t shown = 0;
  const auto show_new_warnings = [&] {
    for (; warnings_now != nullptr && shown < set.warnings.size(); ++shown) {
      *warnings_now << "vit_results: warning: " << set.warnings[shown] << "\n";
    }
  };
  const std::vector<fs::path> dirs = find_run_folders(paths, set.warnings, strict, &set.damaged);
  show_new_warnings();
  if (dirs.empty() && set.damaged.empty()) {
    std::string named;
    for (const auto& p : paths) named += str_cat(named.empty() ? "" : ", ", p.string());
    throw UserError(str_cat("no run folder found in ", named.empty() ? "(nothing named)" : named,
                            " (a run folder holds manifest.json; docs/metrics.md)"));
  }
  size_t readable = 0;
  for (const fs::path& dir : dirs) {
    Run run;
    try {
      run = load_run(dir);
    } catch (const UserError& e) {
      if (strict) throw;
      set.warnings.push_back(str_cat(e.what(), ": run folder ", dir.string(),
                                     " skipped (vit_results --strict makes this an error)"));
      set.damaged.push_back(dir);
      show_new_warnings();
      continue;
    }
    ++readable;
    switch (run.status) {
      case RunStatus::running:
        set.warnings.push_back(str_cat(dir.string(), ": run \"", run.name,
                                       "\" is still in progress (manifest.json status \"running\"): skipped"));
        break;
      case RunStatus::interrupted:
      case RunStatus::died:
        set.warnings.push_back(str_cat(dir.string(), ": run \"", run.name, "\" did not complete (", run.error,
                                       "): listed under \"Failed runs\", left out of the tables"));
        set.failed.push_back(std::move(run));
        break;
      case RunStatus::failed:
        set.warnings.push_back(str_cat(dir.string(), ": run \"", run.name, "\" failed (", run.error,
                                       "): listed under \"Failed runs\", left out of the tables"));
        set.failed.push_back(std::move(run));
        break;
      case RunStatus::completed:
        set.completed.push_back(std::move(run));
        break;
    }
    show_new_warnings();
  }
  if (readable == 0 && !set.damaged.empty()) {
    throw UserError(str_cat("no readable run: every run folder found is damaged (", set.damaged.size(),
                            set.damaged.size() == 1 ? " folder" : " folders", ", see the warnings above)"));
  }
  std::sort(set.completed.begin(), set.completed.end(), run_less);
  std::sort(set.failed.begin(), set.failed.end(), run_less);
  return set;
}

}  // namespace vit::tools
