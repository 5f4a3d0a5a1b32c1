// Helpers of the end-to-end suites: run vit_hpc through mpirun on the
// quickstart spec and read back its metrics files.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using nlohmann::json;

namespace e2e {

// Where the programs, the sources and the data are: the build tree by
// default; VIT_TEST_BIN, VIT_TEST_SOURCE and VIT_TEST_DATA where the
// binaries travel without it (the GPU machine).
inline std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v ? v : fallback;
}
inline const std::string kBin = env_or("VIT_TEST_BIN", VIT_BINARY_DIR);
// The Beans file the prepare_beans_64 fixture makes.
inline const std::string kData = env_or("VIT_TEST_DATA", kBin + "/test_data/beans_64.h5");
inline const std::string kSpec = env_or("VIT_TEST_SOURCE", VIT_SOURCE_DIR) + "/configs/quickstart.yaml";

inline std::string scratch() {
  static std::string dir = [] {
    // One folder per suite, emptied when the suite starts, kept afterwards
    // for inspection (it lives in the build tree).
    const std::string suite = boost::unit_test::framework::master_test_suite().p_name;
    std::string d = env_or("VIT_TEST_SCRATCH", kBin) + "/scratch_" + suite;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

inline int sh(const std::string& cmd) {
  BOOST_TEST_MESSAGE(cmd);
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

inline std::string mpirun(int ranks) {
  // CI runs as root, which Open MPI refuses without being told.
  return std::string("mpirun --oversubscribe --bind-to none ") + (::geteuid() == 0 ? "--allow-run-as-root " : "") +
         "-np " + std::to_string(ranks) + " ";
}

// Runs vit_hpc on `ranks` ranks with the quickstart spec plus overrides.
inline int vit_hpc(int ranks, const std::string& name, const std::string& extra) {
  return sh(mpirun(ranks) + kBin + "/vit_hpc " +
            kSpec + " --set data.path=" + kData + " --set run.output_dir=" + scratch() + " --set run.name=" + name +
            " --set run.progress=false --set run.cpu_threads=1 " + extra + " > " + scratch() + "/" + name +
            ".log 2>&1");
}

inline std::vector<json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  BOOST_TEST_REQUIRE(static_cast<bool>(in), "cannot read " << path);
  std::vector<json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));
  return out;
}

inline std::vector<json> of_type(const std::vector<json>& lines, const std::string& type) {
  std::vector<json> out;
  for (const auto& l : lines) {
    if (l.at("type") == type) out.push_back(l);
  }
  return out;
}

// One numeric field of every "step" line of rank 0, in step order.
inline std::vector<double> step_field(const std::string& run, const std::string& field) {
  std::vector<double> out;
  for (const auto& l : of_type(read_jsonl(scratch() + "/" + run + "/rank_0.jsonl"), "step")) {
    out.push_back(l.at(field).get<double>());
  }
  return out;
}
inline std::vector<double> step_losses(const std::string& run) { return step_field(run, "loss"); }
inline std::vector<double> step_grad_norms(const std::string& run) { return step_field(run, "grad_norm"); }

// Largest |a[i] - b[i]| of two curves of the same length.
inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  BOOST_TEST_REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// The cells of one CSV line (vit_hpc predict quotes none in these tests).
inline std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> cells;
  std::stringstream ss(line);
  for (std::string c; std::getline(ss, c, ',');) cells.push_back(c);
  return cells;
}

}  // namespace e2e
