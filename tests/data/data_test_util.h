// Helpers shared by the data tests: temporary folders under the build tree,
// a small copy of Beans, zip archives made with libzip, an independent JPEG
// decode and a double-precision reference resize.
#pragma once

#include <turbojpeg.h>
#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace vit_test {

namespace fs = std::filesystem;

inline const std::string kBeans = VIT_BEANS_DIR;
inline const std::vector<std::string> kBeansClasses = {"angular_leaf_spot", "bean_rust", "healthy"};

// A fresh folder under <build>/test_tmp, removed with everything in it.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    const fs::path base = fs::path(VIT_BINARY_DIR) / "test_tmp";
    fs::create_directories(base);
    std::string templ = (base / (tag + "_XXXXXX")).string();
    if (!mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed for " + templ);
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  std::string str(const std::string& child = "") const { return child.empty() ? path_.string() : (path_ / child).string(); }

 private:
  fs::path path_;
};

inline std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void write_file(const fs::path& p, const void* data, size_t n) {
  std::ofstream out(p, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
}

// The names of the entries of a folder (sorted), to check nothing was left behind.
inline std::set<std::string> list_dir(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

// Copies the first `per_class[split]` images of every class of the listed
// Beans splits into root/<split>/<class>/.
inline void copy_mini_beans(const fs::path& root, const std::vector<std::pair<std::string, int>>& per_class) {
  for (const auto& [split, n] : per_class) {
    for (const auto& c : kBeansClasses) {
      const fs::path src = fs::path(kBeans) / split / c;
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(src)) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      fs::create_directories(root / split / c);
      for (int i = 0; i < n && i < static_cast<int>(files.size()); ++i) {
        fs::copy_file(files[i], root / split / c / files[i].filename());
      }
    }
  }
}

// Zips root/<split>/** into zip_path with entries "<split>/<class>/<file>"
// (and the folder entries, as the published archives have them).
inline void make_zip(const fs::path& root, const std::string& split, const fs::path& zip_path) {
  int err = 0;
  zip_t* z = zip_open(zip_path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &err);
  if (!z) throw std::runtime_error("zip_open failed for " + zip_path.string());
  zip_dir_add(z, split.c_str(), ZIP_FL_ENC_UTF_8);
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(root / split)) {
    if (e.is_directory()) {
      zip_dir_add(z, fs::relative(e.path(), root).generic_string().c_str(), ZIP_FL_ENC_UTF_8);
    } else {
      files.push_back(e.path());
    }
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    zip_source_t* s = zip_source_file(z, f.c_str(), 0, -1);
    if (!s || zip_file_add(z, fs::relative(f, root).generic_string().c_str(), s, ZIP_FL_ENC_UTF_8) < 0) {
      throw std::runtime_error("zip_file_add failed for " + f.string());
    }
  }
  if (zip_close(z) != 0) throw std::runtime_error("zip_close failed for " + zip_path.string());
}

// Decodes a JPEG with TurboJPEG directly (not through the product's wrapper).
inline std::vector<uint8_t> decode_jpeg(const std::vector<uint8_t>& bytes, int* w, int* h) {
  tjhandle t = tjInitDecompress();
  int ss = 0, cs = 0;
  if (tjDecompressHeader3(t, bytes.data(), bytes.size(), w, h, &ss, &cs) != 0) {
    tjDestroy(t);
    throw std::runtime_error("test decode: bad header");
  }
  std::vector<uint8_t> rgb(static_cast<size_t>(*w) * *h * 3);
  const int rc = tjDecompress2(t, bytes.data(), bytes.size(), rgb.data(), *w, 0, *h, TJPF_RGB, 0);
  tjDestroy(t);
  if (rc != 0) throw std::runtime_error("test decode failed");
  return rgb;
}

// Reference antialiased resize in double precision, written from the
// definition: along each axis, output pixel o takes the input pixels i under
// a triangle of half-width r = max(1, in/out) centred at c = (o + 0.5) * in/out,
// weight max(0, 1 - |i + 0.5 - c| / r), positions outside the image read
// the nearest edge pixel, weights normalised to sum 1. Rows first, then
// columns (the filter is separable), rounded once at the end.
inline std::vector<uint8_t> reference_resize(const std::vector<uint8_t>& src, int w, int h, int ow, int oh) {
  auto weights = [](int in, int out, int o, std::vector<std::pair<int, double>>* taps) {
    const double scale = static_cast<double>(in) / out;
    const double r = std::max(1.0, scale);
    const double c = (o + 0.5) * scale;
    taps->clear();
    double sum = 0;
    for (int i = static_cast<int>(std::floor(c - r)) - 1; i <= static_cast<int>(std::ceil(c + r)) + 1; ++i) {
      const double wgt = std::max(0.0, 1.0 - std::abs(i + 0.5 - c) / r);
      if (wgt <= 0) continue;
      taps->emplace_back(std::clamp(i, 0, in - 1), wgt);
      sum += wgt;
    }
    for (auto& t : *taps) t.second /= sum;
  };
  std::vector<double> tmp(static_cast<size_t>(h) * ow * 3);
  std::vector<std::pair<int, double>> taps;
  for (int ox = 0; ox < ow; ++ox) {
    weights(w, ow, ox, &taps);
    for (int y = 0; y < h; ++y) {
      for (int c = 0; c < 3; ++c) {
        double v = 0;
        for (const auto& [i, wgt] : taps) v += wgt * src[(static_cast<size_t>(y) * w + i) * 3 + c];
        tmp[(static_cast<size_t>(y) * ow + ox) * 3 + c] = v;
      }
    }
  }
  std::vector<uint8_t> out(static_cast<size_t>(oh) * ow * 3);
  for (int oy = 0; oy < oh; ++oy) {
    weights(h, oh, oy, &taps);
    for (int x = 0; x < ow; ++x) {
      for (int c = 0; c < 3; ++c) {
        double v = 0;
        for (const auto& [i, wgt] : taps) v += wgt * tmp[(static_cast<size_t>(i) * ow + x) * 3 + c];
        out[(static_cast<size_t>(oy) * ow + x) * 3 + c] = static_cast<uint8_t>(std::clamp(std::floor(v + 0.5), 0.0, 255.0));
      }
    }
  }
  return out;
}

}  // namespace vit_test
