// vit_results' plots, drawn by the real gnuplot on the fixture runs.
//
// Needs gnuplot on PATH (Debian: gnuplot-nox, installed by run_tests.sh);
// without it the whole suite ends with exit code 77, which ctest reports as
// "Skipped", never as passed. What is checked: every expected file appears
// under its documented name with real content (a complete SVG holding the
// drawn curves and bar labels, or a PNG signature), nothing temporary is left
// behind, the same runs give the same bytes, and a failing gnuplot is an
// error that names the script.
#define BOOST_TEST_MODULE vit_results_plots
#include <boost/test/unit_test.hpp>

#include <cstdio>

#include "core/error.h"
#include "tool_test_util.h"
#include "tools/results_plots.h"
#include "tools/run_data.h"

using namespace vit::tools;
using namespace vit_test;

namespace {

struct RequireGnuplot {
  RequireGnuplot() {
    if (find_on_path("gnuplot").empty()) {
      std::printf("SKIPPED: gnuplot is not on PATH (Debian: apt-get install gnuplot-nox); plots untested\n");
      std::fflush(stdout);
      std::_Exit(77);
    }
  }
};

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

const fs::path kResults = kFixtures / "results";
const std::vector<std::string> kStems{"demo_loss",        "demo_accuracy",         "short_train_loss",
                                      "short_train_accuracy", "throughput_bs8_cpu_1x2", "throughput_bs8_cuda_1x4",
                                      "throughput_bs16",      "throughput_bs32"};

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(RequireGnuplot);

BOOST_AUTO_TEST_CASE(svg_plots_are_written_with_their_content) {
  const RunSet runs = load_runs({kResults});
  TempDir tmp;
  const fs::path dir = tmp.path / "plots";
  const auto written = write_plots(runs, dir, PlotFormat::svg, find_on_path("gnuplot"));
  std::vector<std::string> names;
  for (const auto& p : written) names.push_back(p.filename().string());
  std::vector<std::string> expected;
  for (const auto& s : kStems) expected.push_back(s + ".svg");
  BOOST_TEST(names == expected, boost::test_tools::per_element());

  for (const auto& name : expected) {
    BOOST_TEST_CONTEXT(name) {
      const std::string svg = read_file(dir / name);
      // A small chart is about 12-25 KB; 4 KB is far above an empty canvas.
      BOOST_TEST(svg.size() > 4000u);
      BOOST_TEST(contains(svg, "<svg"));
      BOOST_TEST(contains(svg, "</svg>"));
      BOOST_TEST(contains(svg, "<path"));
    }
  }
  // Legends and bar labels come from the data.
  const std::string loss = read_file(dir / "demo_loss.svg");
  BOOST_TEST(contains(loss, "validation loss"));
  BOOST_TEST(contains(loss, "demo: loss"));
  const std::string bars = read_file(dir / "throughput_bs8_cpu_1x2.svg");
  BOOST_TEST(contains(bars, "low_level_zero"));
  BOOST_TEST(contains(bars, "48.3"));  // the torch_ddp median, printed on its bar
  BOOST_TEST(contains(bars, "hybrid_parallel (1 x 2 x 1)"));

  // Only the images: the temporary folder with script and data is gone.
  BOOST_TEST(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) ==
             static_cast<std::ptrdiff_t>(expected.size()));

  // Same runs, same bytes.
  const fs::path again = tmp.path / "again";
  write_plots(runs, again, PlotFormat::svg, find_on_path("gnuplot"));
  for (const auto& name : expected) BOOST_TEST(read_file(again / name) == read_file(dir / name), name);
}

BOOST_AUTO_TEST_CASE(png_plots_are_png_files) {
  const RunSet runs = load_runs({kResults / "demo"});
  TempDir tmp;
  const auto written = write_plots(runs, tmp.path, PlotFormat::png, find_on_path("gnuplot"));
  BOOST_TEST_REQUIRE(written.size() == 2u);
  for (const auto& p : written) {
    const std::string png = read_file(p);
    BOOST_TEST(png.size() > 4000u);
    BOOST_TEST(png.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0, p);
  }
}

BOOST_AUTO_TEST_CASE(program_draws_plots_and_still_prints_tables) {
  TempDir tmp;
  const auto res = run_program({VIT_RESULTS_EXE, "--plots", tmp.path.string(), kResults.string()});
  BOOST_TEST(res.exit_code == 0);
  BOOST_TEST(res.out == read_file(kExpected / "results.md"));
  BOOST_TEST(contains(res.err, "wrote 8 plots to"));
  for (const auto& s : kStems) BOOST_TEST(fs::file_size(tmp.path / (s + ".svg")) > 4000u, s);
}

BOOST_AUTO_TEST_CASE(a_failing_gnuplot_is_an_error_naming_the_script) {
  // /bin/false stands where gnuplot would: a real program that exits 1.
  const RunSet runs = load_runs({kResults / "demo"});
  TempDir tmp;
  std::string message;
  try {
    write_plots(runs, tmp.path, PlotFormat::svg, "/bin/false");
  } catch (const vit::UserError& e) {
    message = e.what();
  }
  BOOST_TEST(contains(message, "/bin/false failed (exit status 1)"), message);
  BOOST_TEST(contains(message, "plots.gp (kept for inspection"), message);
  BOOST_TEST(!fs::exists(tmp.path / "demo_loss.svg"));
}
