#include "train/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace vit::train {

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

ProgressBar::ProgressBar(bool rank0, bool bar, int64_t every)
    : rank0_(rank0), enabled_(rank0 && bar), tty_(::isatty(STDERR_FILENO) != 0), every_(std::max<int64_t>(1, every)) {}

void ProgressBar::start(const std::string& label, int64_t total) {
  label_ = label;
  total_ = total;
  drawn_ = false;
}

void ProgressBar::update(int64_t done, double loss, double images_per_s) {
  if (!enabled_) return;
  if (!tty_ && done % every_ != 0 && done != total_) return;
  constexpr int kWidth = 24;
  const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : kWidth;
  char bar[kWidth + 1];
  for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '#' : '.';
  bar[kWidth] = '\0';
  std::fprintf(stderr, "%s%s [%s] %lld/%lld loss %.4f %.1f img/s%s", tty_ ? "\r" : "", label_.c_str(), bar,
               static_cast<long long>(done), static_cast<long long>(total_), loss, images_per_s, tty_ ? "" : "\n");
  std::fflush(stderr);
  drawn_ = tty_;
}

void ProgressBar::finish() {
  if (enabled_ && drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

void ProgressBar::line(const std::string& text) {
  if (!rank0_) return;
  finish();
  std::fprintf(stdout, "%s\n", text.c_str());
  std::fflush(stdout);
}

}  // namespace vit::train
