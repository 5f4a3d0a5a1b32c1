// Markdown rendering (see results_tables.h).
//
// Every number goes through one of the fixed formats below (snprintf in the
// C locale: vit_results never calls setlocale), and NaN or infinities print
// as "nan" / "inf" rather than whatever the C library spells. Table cells
// escape '|' and fold newlines, so a run name or an error message cannot
// break a table.
#include "tools/results_tables.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "core/error.h"

namespace vit::tools {
namespace {

std::string format_fixed(double v, int decimals) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string cell(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

int precision_order(const std::string& p) {
  if (p == "fp32") return 0;
  if (p == "bf16") return 1;
  if (p == "fp16") return 2;
  return 3;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string plural(int64_t n, const char* one, const char* many) { return str_cat(n, " ", n == 1 ? one : many); }

std::string layout(const WorldLayout& w) { return str_cat(w.dp, " x ", w.tp, " x ", w.pp); }

std::string ranks(const WorldLayout& w) {
  return str_cat(w.size, " (", plural(w.nodes, "node", "nodes"), " x ", w.ranks_per_node, ")");
}

std::string hardware(const Run& r) {
  if (!r.gpu_name.empty()) {
    std::string s = r.gpu_name;
    if (r.gpu_memory_bytes > 0) s += str_cat(" (", format_bytes(r.gpu_memory_bytes), ")");
    return s;
  }
  return r.cpu;
}

std::string memory_row_label(const std::string& device) {
  return device == "cuda" ? "max memory usage per GPU" : "max memory usage per rank (peak RSS)";
}

// Markdown table builder: a header row, then rows of the same width.
class Table {
 public:
  explicit Table(std::vector<std::string> header, bool first_column_is_label)
      : header_(std::move(header)), label_column_(first_column_is_label) {}
  void add(std::vector<std::string> row) {
    VIT_CHECK(row.size() == header_.size(), "row of ", row.size(), " cells in a table of ", header_.size());
    rows_.push_back(std::move(row));
  }
  void write(std::ostringstream& os) const {
    write_row(os, header_);
    os << '|';
    for (size_t i = 0; i < header_.size(); ++i) os << ((label_column_ && i > 0) ? "---:|" : "---|");
    os << '\n';
    for (const auto& row : rows_) write_row(os, row);
  }

 private:
  static void write_row(std::ostringstream& os, const std::vector<std::string>& cells) {
    os << '|';
    for (const auto& c : cells) os << ' ' << cell(c) << (c.empty() ? "|" : " |");
    os << '\n';
  }
  std::vector<std::string> header_;
  bool label_column_;
  std::vector<std::vector<std::string>> rows_;
};

void write_benchmark_section(std::ostringstream& os, const RunSet& set, const std::vector<BenchmarkTable>& tables) {
  os << "## Benchmark\n\n"
     << "Throughput counts each global batch once and leaves out the warm-up steps; memory is the largest peak "
        "over the ranks (GPU: vit_hpc's device allocations; CPU: peak resident memory). Where several runs share a "
        "column, throughput, it/s and step time are their median and memory is their largest. Where a table has a "
        "PyTorch eager column (tests/gpu/pytorch_baseline.py; its memory is torch.cuda.max_memory_allocated), two "
        "more rows give each column's throughput and memory as a multiple of that column's. Where the runs measured "
        "their GPUs' power over the measured steps (NVML), four rows give the mean power per GPU against its limit, "
        "the median SM clock against the highest, the share of samples held at the power limit and the energy per "
        "image over all GPUs. The mean power comes from the GPU's energy counter, which moves in steps (~100 ms on an "
        "H200): where the counter's steps spanned less than a second, the power cell says over how long (a coarse "
        "figure), and \"sampled\" where it stepped less than twice.\n\n";
  Table runs({"run", "plugin", "precision", "batch size", "global batch", "steps (warm-up)", "ranks",
              "dp x tp x pp", "device", "hardware", "git"},
             false);
  for (const Run& r : set.completed) {
    if (r.mode != "benchmark") continue;
    const BenchmarkRecord& b = *r.benchmark;
    runs.add({r.name, r.plugin, r.precision, str_cat(b.batch_size), str_cat(b.global_batch),
              str_cat(b.steps, " (", b.warmup_steps, ")"), ranks(r.world), layout(r.world),
              str_cat(r.world.device, " (", r.world.communicator, ")"), hardware(r), r.git_revision});
  }
  runs.write(os);

  for (const BenchmarkTable& t : tables) {
    os << "\n### " << t.title << "\n\n";
    std::vector<std::string> header{""};
    for (const auto& c : t.columns) header.push_back(c.label);
    Table table(header, true);
    std::vector<std::string> throughput{"throughput (images/s)"}, memory{memory_row_label(t.device)},
        it_per_s{"it/s"}, step_time{"step time, median (ms)"}, precision{"precision"},
        global_batch{"global batch (images/step)"}, dp_tp_pp{"dp x tp x pp"}, count{"runs"};
    for (const auto& c : t.columns) {
      throughput.push_back(format_fixed(c.images_per_s, 1));
      memory.push_back(format_bytes(c.max_peak_mem));
      it_per_s.push_back(format_fixed(c.it_per_s, 2));
      step_time.push_back(format_fixed(c.step_time_median * 1e3, 1));
      precision.push_back(c.precision);
      global_batch.push_back(str_cat(c.global_batch));
      dp_tp_pp.push_back(str_cat(c.dp, " x ", c.tp, " x ", c.pp));
      count.push_back(str_cat(c.runs.size()));
    }
    table.add(std::move(throughput));
    table.add(std::move(memory));
    // Against the PyTorch eager baseline measured beside (one column: its
    // repeats are combined like any other's).
    const BenchmarkColumn* eager = nullptr;
    for (const auto& c : t.columns) {
      if (c.plugin == "pytorch_eager" && c.images_per_s > 0 && c.max_peak_mem > 0) eager = &c;
    }
    if (eager != nullptr) {
      std::vector<std::string> speed_ratio{"throughput against PyTorch eager"},
          memory_ratio{"memory against PyTorch eager"};
      for (const auto& c : t.columns) {
        speed_ratio.push_back(format_fixed(c.images_per_s / eager->images_per_s, 2) + "x");
        memory_ratio.push_back(
            format_fixed(static_cast<double>(c.max_peak_mem) / static_cast<double>(eager->max_peak_mem), 2) + "x");
      }
      table.add(std::move(speed_ratio));
      table.add(std::move(memory_ratio));
    }
    for (auto* row : {&it_per_s, &step_time}) table.add(std::move(*row));
    // The GPUs' power over the measured steps, where some column has it.
    if (std::any_of(t.columns.begin(), t.columns.end(), [](const BenchmarkColumn& c) { return c.power; })) {
      std::vector<std::string> power{"GPU power, mean per GPU (W)"}, clock{"SM clock, median (MHz)"},
          capped{"held at the power limit (share of samples)"}, energy{"energy per image (J)"};
      for (const auto& c : t.columns) {
        if (!c.power) {
          for (auto* row : {&power, &clock, &capped, &energy}) row->push_back("-");
          continue;
        }
        // The energy counter steps every ~100 ms on an H200: say how long a short stretch was.
        std::string span;
        if (c.power_span_s <= 0) {
          span = " (sampled)";
        } else if (c.power_span_s < 1.0) {
          span = " (over " + format_fixed(c.power_span_s, 2) + " s)";
        }
        power.push_back(format_fixed(c.power_w, 0) + " of " + format_fixed(c.power_limit_w, 0) + span);
        clock.push_back(format_fixed(c.sm_clock_mhz, 0) + " of " + format_fixed(c.sm_clock_max_mhz, 0));
        capped.push_back(format_fixed(100.0 * c.power_capped_share, 0) + "%");
        energy.push_back(format_fixed(c.energy_per_image_j, 3));
      }
      for (auto* row : {&power, &clock, &capped, &energy}) table.add(std::move(*row));
    }
    for (auto* row : {&precision, &global_batch, &dp_tp_pp, &count}) table.add(std::move(*row));
    table.write(os);
  }
}

void write_epoch_table(std::ostringstream& os, const Run& r);

void write_training_run(std::ostringstream& os, const Run& r) {
  os << "\n### " << cell(r.name) << "\n\n";
  os << "- layout: " << plural(r.world.size, "rank", "ranks") << " = " << plural(r.world.nodes, "node", "nodes")
     << " x " << r.world.ranks_per_node << ", dp " << r.world.dp << " x tp " << r.world.tp << " x pp "
     << r.world.pp << ", " << r.world.device << " (" << r.world.communicator << ")\n";
  os << "- plugin: " << r.plugin << ", " << r.precision << ", global batch " << r.global_batch << "\n";
  os << "- hardware: " << hardware(r) << ", host " << r.host << "\n";
  os << "- git " << r.git_revision << ", " << r.start_time << " to " << r.end_time << "\n\n";

  if (r.epochs.empty()) {
    os << "No training epochs (train.epochs 0): evaluation only.\n";
  } else {
    write_epoch_table(os, r);
  }
  os << '\n';
  if (r.test) {
    os << "Final test accuracy: " << format_fixed(r.test->accuracy, 4) << " (loss "
       << format_fixed(r.test->loss, 4) << ", " << plural(r.test->count, "image", "images") << ", after epoch "
       << r.test->epoch << (r.test->weights == "ema" ? ", weight average" : "") << ").";
  } else {
    os << "Final test accuracy: not evaluated.";
  }
  if (r.best_test) {
    os << " Best-validation model (epoch " << r.best_test->epoch
       << ") test accuracy: " << format_fixed(r.best_test->accuracy, 4) << " (loss "
       << format_fixed(r.best_test->loss, 4) << ").";
  }
  os << " Peak memory per rank: " << format_bytes(r.max_step_peak_mem) << ".\n";
}

// The epochs a run's table shows: all of a short run; of a long one (more
// than kMaxEpochColumns) the first, every k-th and the last, so that the
// table stays readable (every epoch is in the rank files and the plots).
constexpr size_t kMaxEpochColumns = 12;
std::vector<size_t> shown_epochs(size_t n, size_t* every) {
  std::vector<size_t> idx;
  *every = 1;
  if (n <= kMaxEpochColumns) {
    for (size_t i = 0; i < n; ++i) idx.push_back(i);
    return idx;
  }
  *every = (n + kMaxEpochColumns - 3) / (kMaxEpochColumns - 2);  // leaves room for the first and the last
  idx.push_back(0);
  for (size_t i = *every - 1; i + 1 < n; i += *every) {
    if (i > 0) idx.push_back(i);
  }
  idx.push_back(n - 1);
  return idx;
}

void write_epoch_table(std::ostringstream& os, const Run& r) {
  size_t every = 1;
  const std::vector<size_t> shown = shown_epochs(r.epochs.size(), &every);
  if (every > 1) {
    os << "One column every " << every << " epochs, of " << r.epochs.size()
       << " (all epochs: rank_0.jsonl, and the plots of --plots).\n\n";
  }
  std::vector<std::string> header{""};
  for (size_t i : shown) header.push_back(str_cat("epoch ", r.epochs[i].epoch));
  Table table(header, true);
  std::vector<std::string> it_per_s{"it/s"}, images{"images/s"}, loss{"average training loss"},
      val_loss{"validation loss"}, val_acc{"validation accuracy"};
  for (size_t i : shown) {
    const auto& e = r.epochs[i];
    it_per_s.push_back(format_fixed(e.it_per_s, 2));
    images.push_back(format_fixed(e.images_per_s, 1));
    loss.push_back(format_fixed(e.avg_loss, 4));
    const auto v = std::find_if(r.validation.begin(), r.validation.end(),
                                [&](const EvalRecord& x) { return x.epoch == e.epoch; });
    val_loss.push_back(v == r.validation.end() ? "-" : format_fixed(v->loss, 4));
    val_acc.push_back(v == r.validation.end() ? "-" : format_fixed(v->accuracy, 4));
  }
  for (auto* row : {&it_per_s, &images, &loss, &val_loss, &val_acc}) table.add(std::move(*row));
  table.write(os);
}

// benchmark.profile of one run: each op's time per step on rank 0 (GPU
// events), its share, the arithmetic rate of the ops with a FLOP count, the
// memory rate of those that count their bytes, and either against its
// measured ceiling (GEMM, device copy) where the run measured one.
void write_profile(std::ostringstream& os, const Run& r) {
  const BenchmarkRecord& b = *r.benchmark;
  os << "\n### Profile: " << r.name << "\n\n";
  if (b.model_tflops_per_gpu > 0) {
    os << "Step arithmetic rate: " << format_fixed(b.model_tflops_per_gpu, 1) << " TFLOP/s per "
       << (r.world.device == "cuda" ? "GPU" : "rank") << " (model FLOPs x images/s)";
    if (b.matrix_ceiling_tflops > 0) {
      os << ", " << format_fixed(100.0 * b.model_tflops_per_gpu / b.matrix_ceiling_tflops, 1)
         << "% of the measured GEMM ceiling (" << format_fixed(b.matrix_ceiling_tflops, 0) << " TFLOP/s)";
    }
    os << ".";
    if (b.memory_ceiling_tbps > 0) {
      os << " Memory ceiling: " << format_fixed(b.memory_ceiling_tbps, 2) << " TB/s (a device-to-device copy).";
    }
    os << "\n\n";
  }
  Table table({"op", "ms per step", "share", "calls per step", "TFLOP/s", "TB/s", "of the ceiling"}, true);
  double total = 0;
  for (const ProfileRecord& p : b.profile) {
    total += p.ms_per_step;
    std::string of_ceiling = "-";
    if (p.tflops > 0 && b.matrix_ceiling_tflops > 0) {
      of_ceiling = format_fixed(100.0 * p.tflops / b.matrix_ceiling_tflops, 1) + "%";
    } else if (p.tbps > 0 && b.memory_ceiling_tbps > 0) {
      of_ceiling = format_fixed(100.0 * p.tbps / b.memory_ceiling_tbps, 1) + "%";
    }
    table.add({p.op, format_fixed(p.ms_per_step, 3), format_fixed(100.0 * p.share, 1) + "%",
               format_fixed(p.calls_per_step, 0), p.tflops > 0 ? format_fixed(p.tflops, 1) : "-",
               p.tbps > 0 ? format_fixed(p.tbps, 2) : "-", of_ceiling});
  }
  table.add({"sum of ops", format_fixed(total, 3), "100.0%", "", "", "", ""});
  table.add({"step, median", format_fixed(b.step_time_median * 1e3, 3), "", "", "", "", ""});
  table.write(os);
}

void write_failed_section(std::ostringstream& os, const RunSet& set) {
  os << "\n## Failed runs\n\n";
  Table table({"run", "mode", "plugin", "precision", "error"}, false);
  for (const Run& r : set.failed) table.add({r.name, r.mode, r.plugin, r.precision, r.error});
  table.write(os);
}

}  // namespace

int plugin_order(const std::string& plugin) {
  static const std::array<const char*, 5> canonical = {"torch_ddp", "torch_ddp_fp16", "low_level_zero", "gemini",
                                                       "hybrid_parallel"};
  for (size_t i = 0; i < canonical.size(); ++i) {
    if (plugin == canonical[i]) return static_cast<int>(i);
  }
  return static_cast<int>(canonical.size());
}

std::string format_bytes(int64_t bytes) {
  static const std::array<const char*, 5> units = {"B", "KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return str_cat(bytes, " B");
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1024.0 && u + 1 < units.size()) {
    v /= 1024.0;
    ++u;
  }
  // Three significant digits; a value that rounds up to 1024 moves up a unit.
  int decimals = v >= 100 ? 0 : v >= 10 ? 1 : 2;
  std::string digits = format_fixed(v, decimals);
  if (digits == "1024" && u + 1 < units.size()) {
    ++u;
    digits = "1.00";
  }
  return str_cat(digits, " ", units[u]);
}

std::vector<BenchmarkTable> benchmark_tables(const RunSet& set) {
  using TableKey = std::tuple<int64_t, std::string, int, int>;  // batch size, device, nodes, ranks per node
  using ColumnKey = std::tuple<int, std::string, std::string, int, std::string, int, int, int, int64_t>;
  std::map<TableKey, std::map<ColumnKey, BenchmarkColumn>> grouped;
  for (const Run& r : set.completed) {
    if (r.mode != "benchmark") continue;
    const BenchmarkRecord& b = *r.benchmark;
    const TableKey tk{b.batch_size, r.world.device, r.world.nodes, r.world.ranks_per_node};
    const ColumnKey ck{plugin_order(r.plugin), r.plugin,   r.plugin_variant, precision_order(r.precision),
                       r.precision,            r.world.tp, r.world.pp,       r.world.dp,
                       b.global_batch};
    BenchmarkColumn& c = grouped[tk][ck];
    c.plugin = r.plugin;
    c.variant = r.plugin_variant;
    c.precision = r.precision;
    c.dp = r.world.dp;
    c.tp = r.world.tp;
    c.pp = r.world.pp;
    c.global_batch = b.global_batch;
    c.runs.push_back(&r);  // set.completed is sorted by name, so repeats are too
  }

  std::map<int64_t, int> tables_per_batch;
  for (const auto& [tk, columns] : grouped) ++tables_per_batch[std::get<0>(tk)];

  std::vector<BenchmarkTable> tables;
  for (auto& [tk, columns] : grouped) {
    BenchmarkTable t;
    std::tie(t.batch_size, t.device, t.nodes, t.ranks_per_node) = tk;
    const int world = t.nodes * t.ranks_per_node;
    t.title = str_cat("Batch size ", t.batch_size, " per data-parallel rank, ", plural(world, "rank", "ranks"), " (",
                      plural(t.nodes, "node", "nodes"), " x ", t.ranks_per_node, "), ", t.device);
    t.plot_name = str_cat("throughput_bs", t.batch_size);
    if (tables_per_batch[t.batch_size] > 1) {
      t.plot_name += str_cat("_", t.device, "_", t.nodes, "x", t.ranks_per_node);
    }
    // A plugin with several columns gets, in its labels, what tells them apart.
    std::map<std::string, std::set<std::string>> precisions, layouts, batches;
    for (const auto& [ck, c] : columns) {
      precisions[c.plugin].insert(c.precision);
      layouts[c.plugin].insert(str_cat(c.dp, " x ", c.tp, " x ", c.pp));
      batches[c.plugin].insert(str_cat(c.global_batch));
    }
    for (auto& [ck, c] : columns) {
      std::vector<double> images, its, times;
      for (const Run* r : c.runs) {
        images.push_back(r->benchmark->images_per_s);
        its.push_back(r->benchmark->it_per_s);
        times.push_back(r->benchmark->step_time_median);
        c.max_peak_mem = std::max(c.max_peak_mem, r->benchmark->max_peak_mem);
      }
      c.images_per_s = median(images);
      c.it_per_s = median(its);
      c.step_time_median = median(times);
      c.power = std::all_of(c.runs.begin(), c.runs.end(), [](const Run* r) { return r->benchmark->power; });
      if (c.power) {
        std::vector<double> energy, power, clock, capped;
        c.power_span_s = c.runs.front()->benchmark->power_span_s;
        for (const Run* r : c.runs) {
          const BenchmarkRecord& b = *r->benchmark;
          c.power_span_s = std::min(c.power_span_s, b.power_span_s);
          energy.push_back(b.energy_j / (static_cast<double>(b.global_batch) * static_cast<double>(b.steps)));
          power.push_back(b.power_w);
          clock.push_back(b.sm_clock_mhz);
          capped.push_back(b.power_capped_share);
          c.power_limit_w = std::max(c.power_limit_w, b.power_limit_w);
          c.sm_clock_max_mhz = std::max(c.sm_clock_max_mhz, b.sm_clock_max_mhz);
        }
        c.energy_per_image_j = median(energy);
        c.power_w = median(power);
        c.sm_clock_mhz = median(clock);
        c.power_capped_share = median(capped);
      }
      std::vector<std::string> parts;
      if (!c.variant.empty()) parts.push_back(c.variant);
      if (precisions[c.plugin].size() > 1) parts.push_back(c.precision);
      if (layouts[c.plugin].size() > 1) parts.push_back(str_cat(c.dp, " x ", c.tp, " x ", c.pp));
      if (batches[c.plugin].size() > 1) parts.push_back(str_cat("global batch ", c.global_batch));
      c.label = c.plugin;
      for (size_t i = 0; i < parts.size(); ++i) c.label += (i == 0 ? " (" : ", ") + parts[i];
      if (!parts.empty()) c.label += ")";
      t.columns.push_back(std::move(c));
    }
    tables.push_back(std::move(t));
  }
  return tables;
}

std::string render_markdown(const RunSet& set) {
  std::ostringstream os;
  os << "# vit_hpc results\n\n";
  int benchmarks = 0, trainings = 0;
  for (const Run& r : set.completed) (r.mode == "benchmark" ? benchmarks : trainings)++;
  os << plural(benchmarks, "benchmark run", "benchmark runs") << ", " << plural(trainings, "training run", "training runs")
     << ", " << plural(static_cast<int64_t>(set.failed.size()), "failed run", "failed runs") << ".\n";

  if (benchmarks > 0) {
    os << '\n';
    write_benchmark_section(os, set, benchmark_tables(set));
  }
  for (const Run& r : set.completed) {
    if (r.mode == "benchmark" && !r.benchmark->profile.empty()) write_profile(os, r);
  }
  if (trainings > 0) {
    os << "\n## Training\n";
    for (const Run& r : set.completed) {
      if (r.mode == "train") write_training_run(os, r);
    }
  }
  if (!set.failed.empty()) write_failed_section(os, set);
  return os.str();
}

}  // namespace vit::tools
