// vit_results on fixture run folders (tests/tools/fixtures, written by hand
// to docs/metrics.md): the exact markdown, the grouping and medians behind it,
// every refusal with the file it names, and the program's command line,
// output file and exit codes. The expected markdown was checked by hand
// against the fixture numbers (medians, maxima, units; see the comments in
// benchmark_columns_combine_repeats); a change in format shows up as a diff.
#define BOOST_TEST_MODULE vit_results
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tool_test_util.h"
#include "tools/results_tables.h"
#include "tools/run_data.h"

using namespace vit::tools;
using vit::str_cat;
using namespace vit_test;

namespace {

const fs::path kResults = kFixtures / "results";
const fs::path kBad = kFixtures / "bad";
const std::string kExe = VIT_RESULTS_EXE;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

BOOST_AUTO_TEST_CASE(fixture_runs_render_exactly_the_expected_markdown) {
  const RunSet runs = load_runs({kResults});
  BOOST_TEST(runs.completed.size() == 18u);
  BOOST_TEST(runs.failed.size() == 1u);
  BOOST_TEST(render_markdown(runs) == read_file(kExpected / "results.md"));
  // One warning for the run in progress, one for the failed run; the plots/
  // subfolder (no manifest, no rank files) is passed over silently.
  BOOST_TEST_REQUIRE(runs.warnings.size() == 2u);
  BOOST_TEST(contains(runs.warnings[0], "in_progress: run \"in_progress\" is still in progress"));
  BOOST_TEST(contains(runs.warnings[1], "oom_gemini: run \"oom_gemini\" failed"));
}

BOOST_AUTO_TEST_CASE(output_does_not_depend_on_how_runs_are_named) {
  // Every run folder named one by one, in reverse order, plus the parent
  // again: each run counts once and the document is the same.
  std::vector<fs::path> paths;
  for (const auto& e : fs::directory_iterator(kResults)) {
    if (fs::exists(e.path() / "manifest.json")) paths.push_back(e.path());
  }
  std::sort(paths.rbegin(), paths.rend());
  paths.push_back(kResults);
  BOOST_TEST(render_markdown(load_runs(paths)) == read_file(kExpected / "results.md"));
}

BOOST_AUTO_TEST_CASE(benchmark_columns_combine_repeats) {
  const RunSet runs = load_runs({kResults});
  const auto tables = benchmark_tables(runs);
  BOOST_TEST_REQUIRE(tables.size() == 4u);
  // Batch sizes ascending; at batch 8, the CPU 1x2 table before the CUDA 1x4 one.
  BOOST_TEST(tables[0].batch_size == 8);
  BOOST_TEST(tables[0].device == "cpu");
  BOOST_TEST(tables[0].plot_name == "throughput_bs8_cpu_1x2");
  BOOST_TEST(tables[1].device == "cuda");
  BOOST_TEST(tables[1].plot_name == "throughput_bs8_cuda_1x4");
  BOOST_TEST(tables[2].batch_size == 16);
  BOOST_TEST(tables[3].batch_size == 32);
  BOOST_TEST(tables[3].plot_name == "throughput_bs32");

  const auto& cpu8 = tables[0].columns;
  BOOST_TEST_REQUIRE(cpu8.size() == 4u);
  BOOST_TEST(cpu8[0].label == "torch_ddp");
  BOOST_TEST(cpu8[1].label == "low_level_zero");
  BOOST_TEST(cpu8[2].label == "hybrid_parallel (1 x 1 x 2)");
  BOOST_TEST(cpu8[3].label == "hybrid_parallel (1 x 2 x 1)");
  // torch_ddp: three repeats at 48.31, 50.0, 45.5 images/s; the median is the
  // middle value itself, so it compares exactly. Memory: the largest peak of
  // any rank of any repeat (54 MiB, rank 0 of bench_ddp_bs8_r3).
  BOOST_TEST(cpu8[0].runs.size() == 3u);
  BOOST_TEST(cpu8[0].images_per_s == 48.31);
  BOOST_TEST(cpu8[0].step_time_median == 0.331);
  BOOST_TEST(cpu8[0].max_peak_mem == 54 * (int64_t(1) << 20));
  // low_level_zero: two repeats at 47 and 49: the mean of the two, exact in
  // binary floating point.
  BOOST_TEST(cpu8[1].runs.size() == 2u);
  BOOST_TEST(cpu8[1].images_per_s == 48.0);
  BOOST_TEST(cpu8[1].max_peak_mem == 41 * (int64_t(1) << 20));

  // Batch 32: canonical plugin order first (the run named a_gemini_bs32 sorts
  // first by name but gemini comes after torch_ddp_fp16), unknown plugins last;
  // the two torch_ddp_fp16 columns differ only in precision, bf16 before fp16.
  std::vector<std::string> labels;
  for (const auto& c : tables[3].columns) labels.push_back(c.label);
  const std::vector<std::string> expected{"torch_ddp", "torch_ddp_fp16 (bf16)", "torch_ddp_fp16 (fp16)", "gemini",
                                          "my_plugin"};
  BOOST_TEST(labels == expected, boost::test_tools::per_element());
}

// A table with a PyTorch eager column (tests/gpu/pytorch_baseline.py's run
// folder) gets each column's throughput and memory as a multiple of its:
// vit_hpc 2500 images/s in 2.5 GiB against 1000 in 3.125 GiB.
BOOST_AUTO_TEST_CASE(tables_with_pytorch_eager_give_ratios_against_it) {
  const std::string md = render_markdown(load_runs({kResults}));
  const std::string bs16 = md.substr(md.find("### Batch size 16 per data-parallel rank"));
  BOOST_TEST(bs16.find("| throughput against PyTorch eager | 2.50x | 1.00x |") != std::string::npos);
  BOOST_TEST(bs16.find("| memory against PyTorch eager | 0.80x | 1.00x |") != std::string::npos);
  // Tables without such a column have no ratio rows.
  const std::string bs32 = md.substr(md.find("### Batch size 32 per data-parallel rank"));
  BOOST_TEST(bs32.substr(0, bs32.find("### Profile")).find("against PyTorch eager") == std::string::npos);
}

// The GPUs' power over the measured steps (NVML; docs/metrics.md): a run's
// energy is its ranks' sum, its power their mean, its SM clock the lowest of
// their medians, its share of samples at the power limit the largest.
// gpu_ddp_bs8: 30 + 31 + 29.5 + 31.5 = 122 J over 32 x 6 = 192 images
// (0.635 J each); 500, 510, 490, 520 W (mean 505); medians 1800, 1755, 1830,
// 1740 MHz; shares 0.25, 0.5, 0, 0.75; energy-counter spans 1.5, 1.2, 2.0,
// 1.8 s (the shortest counts). A run with one rank without the figures has
// none, and so does its column ("-").
BOOST_AUTO_TEST_CASE(gpu_power_combines_the_ranks_and_shows_where_measured) {
  const Run ddp = load_run(kResults / "gpu_ddp_bs8");
  const BenchmarkRecord& b = *ddp.benchmark;
  BOOST_TEST_REQUIRE(b.power);
  BOOST_TEST(b.energy_j == 122.0);
  BOOST_TEST(std::abs(b.power_w - 505.0) < 1e-9);
  BOOST_TEST(b.sm_clock_mhz == 1740.0);
  BOOST_TEST(b.sm_clock_max_mhz == 1980.0);
  BOOST_TEST(b.power_limit_w == 700.0);
  BOOST_TEST(b.power_capped_share == 0.75);
  BOOST_TEST(!load_run(kResults / "gpu_zero_bs8").benchmark->power);

  const auto tables = benchmark_tables(load_runs({kResults}));
  BOOST_TEST_REQUIRE(tables.size() == 4u);
  const auto& cuda8 = tables[1].columns;
  BOOST_TEST_REQUIRE(cuda8.size() == 2u);
  BOOST_TEST(cuda8[0].power);
  BOOST_TEST(std::abs(cuda8[0].energy_per_image_j - 122.0 / 192.0) < 1e-12);
  BOOST_TEST(!cuda8[1].power);
  const std::string md = render_markdown(load_runs({kResults}));
  const std::string t8 = md.substr(md.find("### Batch size 8 per data-parallel rank, 4 ranks"));
  BOOST_TEST(contains(t8, "| GPU power, mean per GPU (W) | 505 of 700 | - |"));
  BOOST_TEST(contains(t8, "| SM clock, median (MHz) | 1740 of 1980 | - |"));
  BOOST_TEST(contains(t8, "| held at the power limit (share of samples) | 75% | - |"));
  BOOST_TEST(contains(t8, "| energy per image (J) | 0.635 | - |"));
  // A power from less than a second of energy-counter steps says over how long (gpu_bf16_bs16: 0.4 s); one
  // without counter steps says it was sampled (torch_eager_bs16 has no energy_counter_span_s); the four
  // ranks of gpu_ddp_bs8 spanned 1.2 s and more: no note.
  BOOST_TEST(cuda8[0].power_span_s == 1.2);
  const std::string t16 = md.substr(md.find("### Batch size 16 per data-parallel rank"));
  BOOST_TEST(contains(t16, "| GPU power, mean per GPU (W) | 650 of 700 (over 0.40 s) | 600 of 700 (sampled) |"));
  // CPU tables have no power rows.
  const std::string t8cpu = md.substr(md.find("### Batch size 8 per data-parallel rank, 2 ranks"));
  BOOST_TEST(!contains(t8cpu.substr(0, t8cpu.find("\n### ")), "GPU power"));

  // One rank without the figures: the run has none.
  TempDir tmp;
  fs::copy(kResults / "gpu_ddp_bs8", tmp.path / "gpu_ddp_bs8");
  const fs::path r3 = tmp.path / "gpu_ddp_bs8" / "rank_3.jsonl";
  std::string text = read_file(r3);
  text = text.substr(0, text.find(",\"gpu_energy_j\"")) + "}\n";
  { std::ofstream(r3) << text; }
  BOOST_TEST(!load_run(tmp.path / "gpu_ddp_bs8").benchmark->power);
}

BOOST_AUTO_TEST_CASE(training_run_reads_rank_zero_and_memory_of_all_ranks) {
  const Run demo = load_run(kResults / "demo");
  BOOST_TEST(demo.epochs.size() == 3u);
  BOOST_TEST(demo.validation.size() == 3u);
  BOOST_TEST_REQUIRE(demo.test.has_value());
  BOOST_TEST(demo.test->accuracy == 0.8203);
  BOOST_TEST(demo.test->count == 128);
  BOOST_TEST(demo.step_losses.size() == 12u);
  BOOST_TEST(demo.max_step_peak_mem == 61 * (int64_t(1) << 20));  // rank 0's 61 MiB over rank 1's 60 MiB

  const Run running = load_run(kResults / "in_progress");
  BOOST_TEST((running.status == RunStatus::running));
  BOOST_TEST(running.epochs.empty());  // rank files of a run in progress are not read

  const Run failed = load_run(kResults / "oom_gemini");
  BOOST_TEST((failed.status == RunStatus::failed));
  BOOST_TEST(contains(failed.error, "cannot allocate"));
}

BOOST_AUTO_TEST_CASE(memory_sizes_print_with_three_digits_in_binary_units) {
  BOOST_TEST(format_bytes(0) == "0 B");
  BOOST_TEST(format_bytes(1023) == "1023 B");
  BOOST_TEST(format_bytes(1024) == "1.00 KiB");
  BOOST_TEST(format_bytes(1536) == "1.50 KiB");
  BOOST_TEST(format_bytes(663LL << 20) == "663 MiB");
  BOOST_TEST(format_bytes(12LL << 20 | 512LL << 10) == "12.5 MiB");
  BOOST_TEST(format_bytes((1LL << 30) - 1) == "1.00 GiB");  // 1023.999 MiB rounds up a unit
  BOOST_TEST(format_bytes(2512LL << 20) == "2.45 GiB");
}

BOOST_AUTO_TEST_CASE(canonical_plugin_order) {
  BOOST_TEST(plugin_order("torch_ddp") < plugin_order("torch_ddp_fp16"));
  BOOST_TEST(plugin_order("torch_ddp_fp16") < plugin_order("low_level_zero"));
  BOOST_TEST(plugin_order("low_level_zero") < plugin_order("gemini"));
  BOOST_TEST(plugin_order("gemini") < plugin_order("hybrid_parallel"));
  BOOST_TEST(plugin_order("hybrid_parallel") < plugin_order("aaa_new_plugin"));
  BOOST_TEST(plugin_order("aaa_new_plugin") == plugin_order("zzz_other"));
}

namespace {

// Each refused fixture, the start of the message (the file and line at
// fault) and a phrase saying why.
struct Refusal {
  const char* folder;
  const char* where;
  const char* why;
};
const Refusal kRefusals[] = {
    {"no_manifest", "no_manifest/manifest.json: missing", "run folder without its manifest"},
    {"manifest_syntax", "manifest_syntax/manifest.json:6:", "malformed JSON"},
    {"rank_syntax", "rank_syntax/rank_1.jsonl:3:", "malformed JSON"},
    {"missing_rank", "missing_rank/rank_1.jsonl: missing", "world size 2"},
    {"extra_rank", "extra_rank/rank_1.jsonl: present", "world size 1"},
    {"batch_mismatch", "batch_mismatch/rank_1.jsonl:9: benchmark batch_size 16 disagrees with",
     "batch_mismatch/rank_0.jsonl:9 (8)"},
    {"global_batch_mismatch", "global_batch_mismatch/rank_0.jsonl:9: benchmark global_batch 16",
     "global_batch_mismatch/manifest.json (32)"},
    {"no_benchmark_line", "no_benchmark_line/rank_1.jsonl: no \"benchmark\" line", "mode \"benchmark\""},
    {"missing_field", "missing_field/rank_0.jsonl:4: field \"peak_mem\" missing", "\"step\" line"},
    {"bad_status", "bad_status/manifest.json: field \"status\" is \"done\"", "allowed: \"running\""},
    {"epoch_gap", "epoch_gap/rank_0.jsonl:8: epoch 3 where epoch 2 was expected", "count up from 1"},
};

}  // namespace

BOOST_AUTO_TEST_CASE(inconsistent_run_folders_are_refused_naming_the_file) {
  for (const Refusal& r : kRefusals) {
    BOOST_TEST_CONTEXT("fixture bad/" << r.folder) {
      std::string message;
      try {
        load_runs({kBad / r.folder}, nullptr, /*strict=*/true);
      } catch (const vit::UserError& e) {
        message = e.what();
      }
      BOOST_TEST(contains(message, r.where), "message: " << message);
      BOOST_TEST(contains(message, r.why), "message: " << message);
    }
  }
}

BOOST_AUTO_TEST_CASE(a_damaged_run_is_skipped_with_a_warning_naming_the_file) {
  // Without --strict, each damaged folder beside the good runs costs one
  // warning naming the file at fault; the good runs render as always.
  for (const Refusal& r : kRefusals) {
    BOOST_TEST_CONTEXT("fixture bad/" << r.folder) {
      const RunSet runs = load_runs({kResults, kBad / r.folder});
      BOOST_TEST(render_markdown(runs) == read_file(kExpected / "results.md"));
      BOOST_TEST_REQUIRE(runs.damaged.size() == 1u);
      BOOST_TEST(runs.damaged[0] == kBad / r.folder);
      BOOST_TEST_REQUIRE(runs.warnings.size() == 3u);  // in progress, failed, and the damaged one
      const size_t mentions = std::count_if(runs.warnings.begin(), runs.warnings.end(),
                                            [&](const std::string& w) { return contains(w, r.where); });
      BOOST_TEST(mentions == 1u);
    }
  }
}

BOOST_AUTO_TEST_CASE(program_refuses_with_exit_code_1_and_writes_nothing) {
  TempDir tmp;
  for (const Refusal& r : kRefusals) {
    BOOST_TEST_CONTEXT("fixture bad/" << r.folder) {
      // Refused with --strict; without it as well, since nothing readable is left.
      for (const bool strict : {true, false}) {
        const fs::path out = tmp.path / "summary.md";
        std::vector<std::string> args = {kExe, "--output", out.string(), (kBad / r.folder).string()};
        if (strict) args.insert(args.begin() + 1, "--strict");
        const auto res = run_program(args);
        BOOST_TEST(res.exit_code == 1);
        BOOST_TEST(contains(res.err, "vit_results: error: "));
        BOOST_TEST(contains(res.err, r.where), "stderr: " << res.err);
        BOOST_TEST(res.out.empty());
        BOOST_TEST(!fs::exists(out));
        BOOST_TEST(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator()) == 0);
      }
    }
  }
  // With --strict a bad run among good ones spoils the whole invocation;
  // without, it is skipped with a warning and the rest is reported.
  const auto strict = run_program({kExe, "--strict", kResults.string(), (kBad / "missing_rank").string()});
  BOOST_TEST(strict.exit_code == 1);
  BOOST_TEST(strict.out.empty());
  const auto lenient = run_program({kExe, kResults.string(), (kBad / "missing_rank").string()});
  BOOST_TEST(lenient.exit_code == 0);
  BOOST_TEST(lenient.out == read_file(kExpected / "results.md"));
  BOOST_TEST(contains(lenient.err, "vit_results: warning: " + (kBad / "missing_rank" / "rank_1.jsonl").string() +
                                       ": missing"));
  BOOST_TEST(contains(lenient.err, "skipped (vit_results --strict makes this an error)"));
}

BOOST_AUTO_TEST_CASE(program_writes_the_markdown_to_stdout_or_atomically_to_a_file) {
  const std::string expected = read_file(kExpected / "results.md");
  const auto to_stdout = run_program({kExe, kResults.string()});
  BOOST_TEST(to_stdout.exit_code == 0);
  BOOST_TEST(to_stdout.out == expected);
  BOOST_TEST(contains(to_stdout.err, "warning: "));
  BOOST_TEST(contains(to_stdout.err, "still in progress"));

  TempDir tmp;
  const fs::path out = tmp.path / "summary.md";
  std::ofstream(out) << "an older summary\n";
  const auto to_file = run_program({kExe, "-o", out.string(), kResults.string()});
  BOOST_TEST(to_file.exit_code == 0);
  BOOST_TEST(to_file.out.empty());
  BOOST_TEST(read_file(out) == expected);
  // Only the finished file is left: the temporary beside it is gone.
  BOOST_TEST(std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator()) == 1);

  // Same input, same bytes.
  BOOST_TEST(run_program({kExe, kResults.string()}).out == expected);
}

BOOST_AUTO_TEST_CASE(program_command_line) {
  const auto help = run_program({kExe, "--help"});
  BOOST_TEST(help.exit_code == 0);
  BOOST_TEST(contains(help.out, "--plots DIR"));
  BOOST_TEST(contains(help.out, "--output"));

  BOOST_TEST(run_program({kExe}).exit_code == 2);
  BOOST_TEST(run_program({kExe, "--no-such-option", kResults.string()}).exit_code == 2);

  const auto bad_format = run_program({kExe, "--plot-format", "gif", kResults.string()});
  BOOST_TEST(bad_format.exit_code == 1);
  BOOST_TEST(contains(bad_format.err, "--plot-format: \"gif\""));

  const auto missing = run_program({kExe, "/no/such/results"});
  BOOST_TEST(missing.exit_code == 1);
  BOOST_TEST(contains(missing.err, "/no/such/results: no such file or folder"));

  // A plain file is passed over with a warning; with nothing else named,
  // there is no run at all, which is an error.
  const auto file_only = run_program({kExe, (kResults / "plots" / "README.txt").string()});
  BOOST_TEST(file_only.exit_code == 1);
  BOOST_TEST(contains(file_only.err, "README.txt: not a folder: ignored"));
  BOOST_TEST(contains(file_only.err, "no run folder found"));
}

BOOST_AUTO_TEST_CASE(run_in_progress_alone_gives_an_empty_summary_and_a_warning) {
  const auto res = run_program({kExe, (kResults / "in_progress").string()});
  BOOST_TEST(res.exit_code == 0);
  BOOST_TEST(res.out == "# vit_hpc results\n\n0 benchmark runs, 0 training runs, 0 failed runs.\n");
  BOOST_TEST(contains(res.err, "in_progress: run \"in_progress\" is still in progress"));
}

BOOST_AUTO_TEST_CASE(interrupted_and_dead_runs_are_told_from_live_ones) {
  // Copies of a run in progress whose manifest says, in turn: interrupted by
  // a signal with a checkpoint; "running" with rank 0's pid gone on this
  // host; "running" with a heartbeat two hours old on another host;
  // "running" with a fresh heartbeat on another host (alive: skipped as in
  // progress, not listed as failed).
  TempDir tmp;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);  // reaped: a pid that no process has now
  auto iso = [](std::time_t t) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return std::string(buf);
  };
  const std::time_t now = std::time(nullptr);
  auto make = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    const fs::path dir = tmp.path / name;
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(kResults / "in_progress")) fs::copy(e.path(), dir / e.path().filename());
    nlohmann::json m = nlohmann::json::parse(read_file(dir / "manifest.json"));
    m["run"] = name;
    edit(m);
    std::ofstream(dir / "manifest.json") << m.dump(2);
  };
  make("interrupted", [&](nlohmann::json& m) {
    m["status"] = "interrupted";
    m["end_time"] = iso(now);
    m["interrupted"] = {{"by", "SIGTERM"}, {"step", 12}, {"checkpoint", "ck/step_000012"}};
  });
  make("pid_gone", [&](nlohmann::json& m) {
    m["host"] = host;
    m["pid"] = child;
    m["heartbeat"] = iso(now);
    m["heartbeat_interval_s"] = 30;
  });
  make("stale", [&](nlohmann::json& m) {
    m["host"] = "some-other-node";
    m["pid"] = 1;
    m["heartbeat"] = iso(now - 7200);
    m["heartbeat_interval_s"] = 30;
  });
  make("alive", [&](nlohmann::json& m) {
    m["host"] = "some-other-node";
    m["pid"] = 1;
    m["heartbeat"] = iso(now - 10);
    m["heartbeat_interval_s"] = 30;
  });
  const RunSet runs = load_runs({tmp.path});
  BOOST_TEST(runs.completed.empty());
  BOOST_TEST_REQUIRE(runs.failed.size() == 3u);  // sorted by name: interrupted, pid_gone, stale
  BOOST_TEST((runs.failed[0].status == RunStatus::interrupted));
  BOOST_TEST(contains(runs.failed[0].error, "interrupted by SIGTERM after step 12; resumes from ck/step_000012"));
  BOOST_TEST((runs.failed[1].status == RunStatus::died));
  BOOST_TEST(contains(runs.failed[1].error, str_cat("pid ", child, " on host ", host, ") is gone")), runs.failed[1].error);
  BOOST_TEST((runs.failed[2].status == RunStatus::died));
  BOOST_TEST(contains(runs.failed[2].error, "no heartbeat since " + iso(now - 7200)), runs.failed[2].error);
  BOOST_TEST(std::count_if(runs.warnings.begin(), runs.warnings.end(), [](const std::string& w) {
               return contains(w, "alive: run \"alive\" is still in progress");
             }) == 1);
}

BOOST_AUTO_TEST_CASE(without_gnuplot_the_plots_are_skipped_with_a_note) {
  // A PATH holding only an empty folder: no gnuplot to be found.
  TempDir empty_bin, plots;
  const auto res =
      run_program({kExe, "--plots", (plots.path / "p").string(), kResults.string()}, empty_bin.path.string());
  BOOST_TEST(res.exit_code == 0);
  BOOST_TEST(contains(res.err, "gnuplot not found: plots skipped"));
  BOOST_TEST(res.out == read_file(kExpected / "results.md"));
  BOOST_TEST(!fs::exists(plots.path / "p"));
}

BOOST_AUTO_TEST_CASE(long_runs_show_every_kth_epoch_the_first_and_the_last) {
  // A 3-epoch run shows every epoch (the expected markdown above); a
  // 300-epoch run shows at most 12 columns: epoch 1, every 30th, epoch 300,
  // and says so; a run of exactly 12 epochs still shows them all.
  const Run demo = load_run(kResults / "demo");
  auto with_epochs = [&](int n) {
    RunSet set;
    Run r = demo;
    r.epochs.clear();
    r.validation.clear();
    for (int e = 1; e <= n; ++e) {
      EpochRecord rec = demo.epochs.front();
      rec.epoch = e;
      r.epochs.push_back(rec);
    }
    set.completed.push_back(r);
    return render_markdown(set);
  };
  auto columns = [](const std::string& md) {
    const size_t at = md.find("| | epoch 1 |");
    BOOST_TEST_REQUIRE(at != std::string::npos);
    const std::string header = md.substr(at, md.find('\n', at) - at);
    std::vector<std::string> out;
    for (size_t p = header.find("epoch "); p != std::string::npos; p = header.find("epoch ", p + 1)) {
      out.push_back(header.substr(p, header.find(' ', p + 6) - p));
    }
    return out;
  };
  const std::string long_md = with_epochs(300);
  const std::vector<std::string> cols = columns(long_md);
  BOOST_TEST(cols.size() == 11u);
  BOOST_TEST(cols.front() == "epoch 1");
  BOOST_TEST(cols[1] == "epoch 30");
  BOOST_TEST(cols.back() == "epoch 300");
  BOOST_TEST(contains(long_md, "One column every 30 epochs, of 300"));
  const std::string twelve = with_epochs(12);
  BOOST_TEST(columns(twelve).size() == 12u);
  BOOST_TEST(!contains(twelve, "One column every"));
  const std::vector<std::string> thirteen = columns(with_epochs(13));
  BOOST_TEST(thirteen.size() <= 12u);
  BOOST_TEST(thirteen.back() == "epoch 13");
}
