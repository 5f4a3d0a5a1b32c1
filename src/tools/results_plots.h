// Plots through gnuplot: loss and accuracy curves per training run,
// throughput bars per benchmark table.
//
// vit_results does not draw anything itself: it writes plain data files and
// one gnuplot script into a private temporary folder inside the plot folder,
// runs the `gnuplot` found on PATH on that script, and renames each finished
// image into place. A reader of the plot folder therefore never sees half a
// file, and a gnuplot failure leaves the previous plots untouched. gnuplot's
// svg and pngcairo terminals put no date in their output, so the same runs
// give the same files.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "tools/run_data.h"

namespace vit::tools {

enum class PlotFormat { svg, png };

// "svg" or "png"; throws vit::UserError naming the option otherwise.
PlotFormat parse_plot_format(const std::string& name);

// The first executable `program` in the folders of $PATH; empty when none.
std::filesystem::path find_on_path(const std::string& program);

// Writes into `dir` (created if needed), for each completed training run
// <run>_loss.<ext> and, when it has evaluations, <run>_accuracy.<ext>; for
// each benchmark table <plot_name>.<ext> (results_tables.h). <run> is the run
// name with characters other than letters, digits, '.', '-' and '_' replaced
// by '_'. Returns the files written, in a fixed order. Throws vit::UserError
// when gnuplot fails (naming the script it was given, kept for inspection).
std::vector<std::filesystem::path> write_plots(const RunSet& runs, const std::filesystem::path& dir,
                                               PlotFormat format, const std::filesystem::path& gnuplot);

}  // namespace vit::tools
