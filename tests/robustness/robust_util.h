// Helpers of the robustness suites (issue 9): every bad input is made here,
// from nothing: small synthetic JPEG trees, HDF5 files packed from them, a
// tiny model spec. The programs run as child processes (alone or under
// mpirun), so a test sees exactly what a user sees: the exit status of every
// rank and everything printed.
#pragma once

#include <sys/wait.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>

namespace robust {

namespace fs = std::filesystem;

inline const std::string kVitHpc = VIT_HPC_EXE;
inline const std::string kDataPrep = VIT_DATA_PREP_EXE;
inline const std::string kVitResults = VIT_RESULTS_EXE;
inline const std::vector<std::string> kClasses = {"angular_leaf_spot", "bean_rust", "healthy"};

// A fresh folder under <build>/robust_tmp, removed with everything in it.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    const fs::path base = fs::path(VIT_BINARY_DIR) / "robust_tmp";
    fs::create_directories(base);
    std::string templ = (base / (tag + "_XXXXXX")).string();
    if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed for " + templ);
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  std::string str(const std::string& child = "") const {
    return child.empty() ? path_.string() : (path_ / child).string();
  }

 private:
  fs::path path_;
};

struct Result {
  int status = -1;      // exit status; 128 + signal when killed
  std::string output;   // stdout and stderr together
};

// Runs `command` with sh (from a script file, so any quoting works);
// `timeout` turns a hang into status 124.
inline Result shell(const std::string& command, int timeout_s = 120) {
  BOOST_TEST_MESSAGE("$ " << command);
  std::string script = (fs::path(VIT_BINARY_DIR) / "robust_cmd_XXXXXX").string();
  const int fd = ::mkstemp(script.data());
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  const std::string body = command + "\n";
  if (::write(fd, body.data(), body.size()) != static_cast<ssize_t>(body.size())) throw std::runtime_error("write");
  ::close(fd);
  Result r;
  const std::string full = "timeout " + std::to_string(timeout_s) + " sh " + script + " 2>&1";
  FILE* pipe = ::popen(full.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed");
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
  const int raw = ::pclose(pipe);
  ::unlink(script.c_str());
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  return r;
}

inline std::string mpirun(int np) {
  // CI runs as root, which Open MPI refuses without being told.
  return std::string("mpirun --oversubscribe --bind-to none ") + (::geteuid() == 0 ? "--allow-run-as-root " : "") +
         "-np " + std::to_string(np) + " ";
}

// `program args` on `np` ranks; every rank appends "rank R status S" to the
// output, since mpirun itself reports only one status.
inline Result each_rank(int np, const std::string& program_and_args) {
  return shell(mpirun(np) + "sh -c '" + program_and_args + "; echo rank $OMPI_COMM_WORLD_RANK status $?'");
}

inline size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}
inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Every rank of `np` reported exit status `status`.
inline bool every_rank_exited(const Result& r, int np, int status) {
  for (int rank = 0; rank < np; ++rank) {
    if (!contains(r.output, "rank " + std::to_string(rank) + " status " + std::to_string(status) + "\n")) return false;
  }
  return true;
}

// What a user must never see for an input problem: an internal check with a
// source path, or Open MPI tearing the job down.
inline void expect_clean_refusal(const Result& r) {
  BOOST_TEST(!contains(r.output, "check failed"), r.output);
  BOOST_TEST(!contains(r.output, "ORTE_ERROR_LOG"), r.output);
  BOOST_TEST(!contains(r.output, "MPI_ABORT"), r.output);
  BOOST_TEST(!contains(r.output, "src/"), r.output);
}

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
inline void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

// A W x H JPEG of smooth colours (seeded), written with TurboJPEG directly.
inline void write_jpeg(const fs::path& path, int w, int h, unsigned seed) {
  std::vector<unsigned char> rgb(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      unsigned char* p = &rgb[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<unsigned char>((x * 7 + seed * 31) & 255);
      p[1] = static_cast<unsigned char>((y * 5 + seed * 17) & 255);
      p[2] = static_cast<unsigned char>((x + y + seed * 53) & 255);
    }
  }
  tjhandle t = tjInitCompress();
  unsigned char* jpeg = nullptr;
  unsigned long size = 0;
  if (tjCompress2(t, rgb.data(), w, 0, h, TJPF_RGB, &jpeg, &size, TJSAMP_444, 90, 0) != 0) {
    tjDestroy(t);
    throw std::runtime_error("test JPEG encode failed");
  }
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(jpeg), static_cast<std::streamsize>(size));
  tjFree(jpeg);
  tjDestroy(t);
}

// root/<split>/<class>/img_<k>.jpg: `per_class` images per class and split,
// each `side` x `side` pixels.
inline void make_image_tree(const fs::path& root, int per_class, int side = 24,
                            const std::vector<std::string>& splits = {"train", "validation", "test"}) {
  unsigned seed = 1;
  for (const auto& split : splits) {
    for (const auto& c : kClasses) {
      fs::create_directories(root / split / c);
      for (int k = 0; k < per_class; ++k) {
        write_jpeg(root / split / c / ("img_" + std::to_string(k) + ".jpg"), side, side, seed++);
      }
    }
  }
}

// Packs `images` into `out` with vit_data_prep (the real program).
inline void prep(const std::string& images, const std::string& out, int size = 16,
                 const std::string& storage = "raw") {
  const Result r = shell(kDataPrep + " --input " + images + " --output " + out + " --image-size " +
                         std::to_string(size) + " --storage " + storage + " --quiet --overwrite");
  if (r.status != 0) throw std::runtime_error("vit_data_prep failed: " + r.output);
}

// A spec for a 16 px model of 2235 parameters on the CPU: a run takes well
// under a second. Every file path is absolute, every field the tests vary is
// a --set away.
inline std::string write_tiny_spec(const fs::path& dir, const std::string& data, const std::string& results) {
  const fs::path spec = dir / "tiny.yaml";
  write_text(spec,
             "run:\n  name: tiny\n  device: cpu\n  progress: false\n  cpu_threads: 1\n  output_dir: " + results +
                 "\n"
                 "data:\n  path: " + data + "\n  loader_threads: 1\n"
                 "model:\n  image_size: 16\n  patch_size: 8\n  hidden: 8\n  depth: 1\n  heads: 2\n  mlp_dim: 16\n"
                 "train:\n  epochs: 1\n  batch_size: 2\n  lr: 1.0e-3\n"
                 "eval:\n  batch_size: 4\n");
  return spec.string();
}

}  // namespace robust
