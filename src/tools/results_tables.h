// Markdown tables from loaded runs (vit_results' output).
//
// Benchmark runs become one table per (batch size, machine shape) with one
// column per plugin configuration, in the shape of the original example's
// README: throughput, maximum memory per GPU, it/s. Training runs become one
// table per run with one column per epoch. Failed runs are listed apart.
//
// The output depends only on the runs' contents, never on the order they
// were named in or on the paths they were read from: plugins in a fixed
// canonical order, batch sizes ascending, runs by name. Numbers are printed
// with fixed formats in the C locale, so the same input gives the same bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tools/run_data.h"

namespace vit::tools {

// One column of a benchmark table: every completed benchmark run with the
// same plugin, precision, layout and batch (repeats), combined. Throughput,
// it/s and step time are the median over the repeats (mean of the middle two
// for an even count); memory is the largest over them, memory being a limit.
struct BenchmarkColumn {
  std::string plugin, precision;
  std::string variant;  // the plugin's variant ("stage 1"), empty when none
  int dp = 0, tp = 0, pp = 0;
  int64_t global_batch = 0;
  std::string label;  // the plugin, plus precision and layout where needed to tell columns apart
  std::vector<const Run*> runs;
  double images_per_s = 0, it_per_s = 0, step_time_median = 0;
  int64_t max_peak_mem = 0;
  // Where every run of the column measured the GPUs' power: the medians
  // over the runs of energy per image, mean power, SM clock and the share of
  // samples held at the power limit (the limit and highest clock: largest).
  bool power = false;
  double energy_per_image_j = 0, power_w = 0, power_limit_w = 0, sm_clock_mhz = 0, sm_clock_max_mhz = 0,
         power_capped_share = 0;
  double power_span_s = 0;  // the shortest energy-counter span of its runs (0: some run's power was sampled)
};

// Runs that are comparable side by side: same batch size per data-parallel
// rank, same device and same number of nodes and ranks per node.
struct BenchmarkTable {
  int64_t batch_size = 0;
  std::string device;
  int nodes = 0, ranks_per_node = 0;
  std::string title;      // the table's heading
  std::string plot_name;  // file stem of its throughput plot: throughput_bs<N>[...]
  std::vector<BenchmarkColumn> columns;
};

// Position of a plugin in the canonical column order (torch_ddp,
// torch_ddp_fp16, low_level_zero, gemini, hybrid_parallel); others after
// them, alphabetically.
int plugin_order(const std::string& plugin);

// Groups the completed benchmark runs of `runs` into tables, in output order.
// The columns point into `runs`, which must outlive the result.
std::vector<BenchmarkTable> benchmark_tables(const RunSet& runs);

// The whole markdown document.
std::string render_markdown(const RunSet& runs);

// "2.34 GiB", "663 MiB", "12.5 KiB": three significant digits, binary units.
std::string format_bytes(int64_t bytes);

}  // namespace vit::tools
