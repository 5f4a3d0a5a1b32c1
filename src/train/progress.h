// Rank 0's console output: a progress bar during an epoch (redrawn in place
// on a terminal, a line every `every` steps otherwise; off with
// run.progress=false) and summary lines on stdout (always).
#pragma once

#include <cstdint>
#include <string>

namespace vit::train {

// One number through a printf format ("%.1f"), for the summary lines.
std::string fmt(const char* format, double v);

class ProgressBar {
 public:
  // rank0: whether this rank prints at all; bar: whether the bar is drawn.
  ProgressBar(bool rank0, bool bar, int64_t every);
  void start(const std::string& label, int64_t total);
  void update(int64_t done, double loss, double images_per_s);
  void finish();  // ends the bar's line
  void line(const std::string& text);  // a line of its own (clears the bar first)

 private:
  bool rank0_, enabled_, tty_;
  int64_t every_, total_ = 0;
  std::string label_;
  bool drawn_ = false;
};

}  // namespace vit::train
