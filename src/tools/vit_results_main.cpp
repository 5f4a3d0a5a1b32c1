// vit_results: run folders in, markdown tables (and optionally plots) out.
//
//   vit_results [--strict] [--plots DIR] [--plot-format svg|png] [--output FILE] RUN_DIR_OR_PARENT...
//
// Markdown goes to stdout, or to FILE (written atomically); warnings (runs
// skipped, damaged run folders, gnuplot missing) go to stderr, so
// `vit_results results/ > summary.md` stays clean. A damaged run folder is
// skipped with a warning naming the file at fault and the rest reported;
// --strict refuses instead. Exit status: 0 done, 1 a run folder (with
// --strict) or the output was refused, or no readable run was found (message
// on stderr, nothing written), 2 bad command line.
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "core/error.h"
#include "tools/output_file.h"
#include "tools/results_plots.h"
#include "tools/results_tables.h"
#include "tools/run_data.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

constexpr const char* kUsage =
    "Usage: vit_results [options] RUN_DIR_OR_PARENT...\n"
    "\n"
    "Reads run folders (manifest.json + rank_<r>.jsonl, docs/metrics.md) and prints\n"
    "markdown: one table per benchmark batch size with a column per plugin, one\n"
    "table per training run with a column per epoch. A folder holding manifest.json\n"
    "is a run; any other folder stands for its immediate subfolders that are runs.\n"
    "Runs still in progress are skipped with a warning; failed runs are listed.\n"
    "A damaged run folder (no manifest, a malformed file) is skipped with a warning\n"
    "naming the file, and the other runs are reported; --strict refuses it instead.\n"
    "\n"
    "Options";

int run(int argc, char** argv) {
  po::options_description visible(kUsage);
  std::string plots, plot_format = "svg", output;
  bool strict = false;
  visible.add_options()("help,h", "print this help and exit")(
      "strict", po::bool_switch(&strict),
      "refuse (exit status 1, nothing written) when any run folder is damaged, instead of skipping it")(
      "plots", po::value<std::string>(&plots)->value_name("DIR"),
      "also draw loss/accuracy curves and throughput bars into DIR with gnuplot "
      "(skipped, with a note, when gnuplot is not on PATH)")(
      "plot-format", po::value<std::string>(&plot_format)->value_name("svg|png"), "image format of the plots (svg)")(
      "output,o", po::value<std::string>(&output)->value_name("FILE"),
      "write the markdown to FILE (atomically) instead of stdout");
  po::options_description hidden;
  hidden.add_options()("runs", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(visible).add(hidden);
  po::positional_options_description positional;
  positional.add("runs", -1);

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "vit_results: " << e.what() << "\n(vit_results --help lists the options)\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << visible << "\n";
    return 0;
  }
  if (!vm.count("runs")) {
    std::cerr << "vit_results: name at least one run folder or a folder of runs (vit_results --help)\n";
    return 2;
  }
  std::vector<fs::path> paths;
  for (const auto& r : vm["runs"].as<std::vector<std::string>>()) paths.emplace_back(r);

  try {
    const vit::tools::PlotFormat format = vit::tools::parse_plot_format(plot_format);
    const vit::tools::RunSet runs = vit::tools::load_runs(paths, &std::cerr, strict);
    const std::string markdown = vit::tools::render_markdown(runs);

    if (!plots.empty()) {
      const fs::path gnuplot = vit::tools::find_on_path("gnuplot");
      if (gnuplot.empty()) {
        std::cerr << "vit_results: gnuplot not found: plots skipped (Debian: apt-get install gnuplot-nox)\n";
      } else {
        const auto written = vit::tools::write_plots(runs, plots, format, gnuplot);
        std::cerr << "vit_results: wrote " << written.size() << " plot" << (written.size() == 1 ? "" : "s")
                  << " to " << plots << "\n";
      }
    }
    if (output.empty()) {
      std::cout << markdown << std::flush;
      if (!std::cout) {
        std::cerr << "vit_results: cannot write to stdout\n";
        return 1;
      }
    } else {
      vit::tools::write_file_atomically(output, markdown);
    }
  } catch (const vit::UserError& e) {
    std::cerr << "vit_results: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "vit_results: internal error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
