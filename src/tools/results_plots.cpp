// gnuplot plots (see results_plots.h).
//
// Strings reach gnuplot in single quotes, where nothing is special except the
// quote itself (written twice); labels inside data files are in double
// quotes, so any double quote in a label becomes a single one. Missing values
// (an epoch without validation) are written as "?" and declared missing, so
// gnuplot leaves a gap instead of drawing a zero.
#include "tools/results_plots.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "tools/results_tables.h"

extern char** environ;

namespace vit::tools {
namespace {

namespace fs = std::filesystem;

std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("''") : std::string(1, c);
  return out + "'";
}

std::string data_label(const std::string& s) {
  std::string out = "\"";
  for (char c : s) out += (c == '"' || c == '\n') ? '\'' : c;
  return out + "\"";
}

std::string number(double v) {
  if (!std::isfinite(v)) return "?";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string file_stem(const std::string& run_name) {
  std::string out = run_name;
  for (char& c : out) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '-' || c == '_';
    if (!keep) c = '_';
  }
  if (out.empty() || out[0] == '.') out.insert(out.begin(), '_');
  return out;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) throw UserError(str_cat(path.string(), ": cannot write: ", std::strerror(errno)));
}

// Builds the script and its data files in one temporary folder.
class PlotScript {
 public:
  PlotScript(fs::path tmp, PlotFormat format) : tmp_(std::move(tmp)), format_(format) {
    // Names relative to the temporary folder: gnuplot copies plot commands
    // into the SVG, and a random folder name there would break "same input,
    // same bytes".
    script_ << "# Written by vit_results: every plot of one invocation.\n"
            << "cd " << gnuplot_quote(tmp_.string()) << "\n"
            << "set datafile missing '?'\n"
            << "set style data linespoints\n"
            << "set grid\n";
  }
  const char* extension() const { return format_ == PlotFormat::svg ? ".svg" : ".png"; }

  // Starts a plot whose image will be named `file_name` in the plot folder.
  void begin(const std::string& file_name, const std::string& title) {
    outputs_.push_back(file_name);
    script_ << "\nreset\nset datafile missing '?'\nset grid\n";
    if (format_ == PlotFormat::svg) {
      script_ << "set terminal svg size 800,480 fixed noenhanced font 'sans,12' background rgb 'white'\n";
    } else {
      script_ << "set terminal pngcairo size 800,480 noenhanced font 'sans,10' background rgb 'white'\n";
    }
    script_ << "set output " << gnuplot_quote(file_name) << "\n"
            << "set title " << gnuplot_quote(title) << "\n";
  }
  void line(const std::string& text) { script_ << text << "\n"; }
  // Writes a data file and returns its quoted path for a plot command.
  std::string data(const std::string& name, const std::string& contents) {
    const fs::path p = tmp_ / name;
    write_text(p, contents);
    return gnuplot_quote(name);
  }
  void end() { script_ << "unset output\n"; }

  fs::path write() {
    const fs::path p = tmp_ / "plots.gp";
    write_text(p, script_.str());
    return p;
  }
  const std::vector<std::string>& outputs() const { return outputs_; }

 private:
  fs::path tmp_;
  PlotFormat format_;
  std::ostringstream script_;
  std::vector<std::string> outputs_;
};

void add_training_plots(PlotScript& ps, const Run& r, const std::string& stem) {
  if (r.epochs.empty()) return;  // train.epochs 0: evaluation only, no curve to draw
  // Loss against the optimizer step: the per-step curve, the epoch averages
  // and the validation loss, both placed at the last step of their epoch.
  std::ostringstream steps, epochs;
  for (const StepLoss& s : r.step_losses) steps << s.step << ' ' << number(s.loss) << '\n';
  int64_t step_at_end = 0;
  bool any_validation = false;
  for (const EpochRecord& e : r.epochs) {
    step_at_end += e.steps;
    double val_loss = NAN, val_acc = NAN;
    for (const EvalRecord& v : r.validation) {
      if (v.epoch == e.epoch) {
        val_loss = v.loss;
        val_acc = v.accuracy;
        any_validation = true;
      }
    }
    epochs << step_at_end << ' ' << number(e.avg_loss) << ' ' << number(val_loss) << ' ' << e.epoch << ' '
           << number(val_acc) << '\n';
  }
  const std::string steps_file = r.step_losses.empty() ? "" : ps.data(stem + "_steps.dat", steps.str());
  const std::string epochs_file = ps.data(stem + "_epochs.dat", epochs.str());

  ps.begin(stem + "_loss" + ps.extension(), r.name + ": loss");
  ps.line("set xlabel 'optimizer step'\nset ylabel 'loss'\nset xrange [0:*]\nset key top right");
  std::string plot = "plot ";
  if (!steps_file.empty()) plot += steps_file + " using 1:2 with lines lw 1 title 'training loss (step)', ";
  plot += epochs_file + " using 1:2 with linespoints lw 2 pt 7 title 'training loss (epoch average)'";
  if (any_validation) plot += ", " + epochs_file + " using 1:3 with linespoints lw 2 pt 5 title 'validation loss'";
  ps.line(plot);
  ps.end();

  if (!any_validation && !r.test) return;
  ps.begin(stem + "_accuracy" + ps.extension(), r.name + ": accuracy");
  ps.line(str_cat("set xlabel 'epoch'\nset ylabel 'accuracy'\nset yrange [0:1.05]\nset xrange [0.5:",
                  r.epochs.size(), ".5]\nset xtics 1\nset key bottom right"));
  std::vector<std::string> parts;
  if (any_validation) {
    parts.push_back(epochs_file + " using 4:5 with linespoints lw 2 pt 7 title 'validation accuracy'");
  }
  if (r.test) {
    const std::string test_file =
        ps.data(stem + "_test.dat", str_cat(r.test->epoch, ' ', number(r.test->accuracy), '\n'));
    parts.push_back(test_file + " using 1:2 with points pt 9 ps 2 title 'test accuracy'");
  }
  std::string accuracy_plot = "plot ";
  for (size_t i = 0; i < parts.size(); ++i) accuracy_plot += (i ? ", " : "") + parts[i];
  ps.line(accuracy_plot);
  ps.end();
}

void add_throughput_plot(PlotScript& ps, const BenchmarkTable& t) {
  std::ostringstream data;
  for (const BenchmarkColumn& c : t.columns) data << data_label(c.label) << ' ' << number(c.images_per_s) << '\n';
  const std::string file = ps.data(t.plot_name + ".dat", data.str());
  ps.begin(t.plot_name + ps.extension(), "Throughput: " + t.title);
  ps.line("set ylabel 'images/s'\nset yrange [0:*]\nset style fill solid 0.7 border -1\nset boxwidth 0.6\n"
          "set xtics noenhanced rotate by -25\nunset key\nset grid noxtics ytics\nset offsets 0, 0, graph 0.1, 0");
  ps.line(str_cat("set xrange [-0.6:", number(static_cast<double>(t.columns.size()) - 0.4), "]"));
  ps.line("plot " + file + " using 0:2:xtic(1) with boxes lc rgb '#4a78a8' notitle, '' using 0:2:(sprintf('%.1f', $2)) "
          "with labels offset 0,0.8 notitle");
  ps.end();
}

int run_program(const fs::path& program, const fs::path& script) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  // gnuplot's own messages go to vit_results' stderr; its stdout too, so that
  // nothing but markdown ever reaches our stdout.
  posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);
  const std::string prog = program.string(), arg = script.string();
  char* argv[] = {const_cast<char*>("gnuplot"), const_cast<char*>(arg.c_str()), nullptr};
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, prog.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw UserError(str_cat(prog, ": cannot start: ", std::strerror(rc)));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw UserError(str_cat(prog, ": waitpid failed: ", std::strerror(errno)));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace

PlotFormat parse_plot_format(const std::string& name) {
  if (name == "svg") return PlotFormat::svg;
  if (name == "png") return PlotFormat::png;
  throw UserError(str_cat("--plot-format: \"", name, "\" is not a plot format (allowed: svg, png)"));
}

fs::path find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return {};
  std::string folders = path;
  size_t start = 0;
  while (start <= folders.size()) {
    const size_t colon = std::min(folders.find(':', start), folders.size());
    const std::string folder = folders.substr(start, colon - start);
    const fs::path candidate = fs::path(folder.empty() ? "." : folder) / program;
    std::error_code ec;
    if (fs::is_regular_file(candidate, ec) && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = colon + 1;
  }
  return {};
}

std::vector<fs::path> write_plots(const RunSet& runs, const fs::path& dir, PlotFormat format,
                                  const fs::path& gnuplot) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw UserError(str_cat(dir.string(), ": cannot create the plot folder: ", ec.message()));
  std::string tmp_template = (dir / ".vit_results_plots.XXXXXX").string();
  if (::mkdtemp(tmp_template.data()) == nullptr) {
    throw UserError(str_cat(dir.string(), ": cannot create a temporary folder: ", std::strerror(errno)));
  }
  const fs::path tmp = tmp_template;

  PlotScript ps(tmp, format);
  std::set<std::string> stems;
  for (const Run& r : runs.completed) {
    if (r.mode != "train") continue;
    std::string stem = file_stem(r.name);
    for (int n = 2; !stems.insert(stem).second; ++n) stem = str_cat(file_stem(r.name), "_", n);
    add_training_plots(ps, r, stem);
  }
  for (const BenchmarkTable& t : benchmark_tables(runs)) add_throughput_plot(ps, t);
  if (ps.outputs().empty()) {
    fs::remove_all(tmp, ec);
    return {};
  }
  const fs::path script = ps.write();

  const int rc = run_program(gnuplot, script);
  if (rc != 0) {
    throw UserError(str_cat(gnuplot.string(), " failed (exit status ", rc, ") on ", script.string(),
                            " (kept for inspection; gnuplot's messages are above)"));
  }
  std::vector<fs::path> written;
  for (const std::string& name : ps.outputs()) {
    const fs::path from = tmp / name, to = dir / name;
    if (!fs::exists(from) || fs::file_size(from) == 0) {
      throw UserError(str_cat(gnuplot.string(), " wrote no ", name, " from ", script.string(),
                              " (kept for inspection)"));
    }
    fs::rename(from, to, ec);
    if (ec) throw UserError(str_cat(to.string(), ": cannot move the plot into place: ", ec.message()));
    written.push_back(to);
  }
  fs::remove_all(tmp, ec);
  return written;
}

}  // namespace vit::tools
