// Helpers of the end-to-end suites: run vit_hpc through mpirun on the
// tests' base spec (tests/train/e2e_base.yaml) and read back its metrics files.
#pragma once

#include <unistd.h>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <thread>
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
inline const std::string kSpec = env_or("VIT_TEST_SOURCE", VIT_SOURCE_DIR) + "/tests/train/e2e_base.yaml";

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

// Runs vit_hpc on `ranks` ranks with the base spec plus overrides.
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


// ---------------------------------------------------------------------------
// Runs acted on while they train (checkpoints and faults, issue 11)
// ---------------------------------------------------------------------------

inline std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }
inline json manifest(const std::string& run) { return json::parse(slurp(scratch() + "/" + run + "/manifest.json")); }
inline std::string log_of(const std::string& name) { return slurp(scratch() + "/" + name + ".log"); }

// An mpirun started in the background: its pid, its exit status when done.
// `cwd`: the working directory it runs in (default: the test's own).
class Background {
 public:
  Background(int ranks, const std::string& name, const std::string& extra, const std::string& cwd = "")
      : base_(scratch() + "/" + name), name_(name) {
    fs::remove(base_ + ".pid");
    fs::remove(base_ + ".rc");
    std::ofstream script(base_ + ".sh");
    if (!cwd.empty()) script << "cd '" << cwd << "' || exit 1\n";
    script << mpirun(ranks) << kBin << "/vit_hpc " << kSpec << " --set data.path=" << kData
           << " --set run.output_dir=" << scratch() << " --set run.name=" << name
           << " --set run.progress=false --set run.cpu_threads=1 " << extra << " >> " << base_ << ".log 2>&1 &\n"
           << "echo $! > " << base_ << ".pid\n"
           << "wait $!\n"
           << "echo $? > " << base_ << ".rc.tmp && mv " << base_ << ".rc.tmp " << base_ << ".rc\n";
    script.close();
    BOOST_TEST_REQUIRE(sh("sh " + base_ + ".sh > /dev/null 2>&1 &") == 0);
    BOOST_TEST_REQUIRE(wait_for([&] { return fs::exists(base_ + ".pid") && fs::file_size(base_ + ".pid") > 0; }, 10));
    pid_ = std::stoi(slurp(base_ + ".pid"));
  }
  // A test that gave up early leaves no job behind: every rank, then mpirun.
  ~Background() {
    if (fs::exists(base_ + ".rc")) return;
    try {
      const json m = json::parse(slurp(scratch() + "/" + name_ + "/manifest.json"));
      for (const json& r : m.at("ranks")) ::kill(r.at("pid").get<int>(), SIGKILL);
    } catch (const std::exception&) {
    }
    if (pid_ > 0) ::kill(pid_, SIGKILL);
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  int pid() const { return pid_; }
  // The exit status, or -1 when it did not end within `seconds`.
  int wait(double seconds) {
    if (!wait_for([&] { return fs::exists(base_ + ".rc"); }, seconds)) return -1;
    return std::stoi(slurp(base_ + ".rc"));
  }
  static bool wait_for(const std::function<bool()>& done, double seconds) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < end) {
      if (done()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return done();
  }

 private:
  std::string base_, name_;
  int pid_ = -1;
};

// Complete step lines rank 0 has written so far.
inline int64_t steps_written(const std::string& run) {
  std::ifstream in(scratch() + "/" + run + "/rank_0.jsonl");
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) n += line.find("\"type\":\"step\"") != std::string::npos && !in.eof();
  return n;
}

// World rank r's pid, from the manifest.
inline int rank_pid(const std::string& run, int r) { return manifest(run)["ranks"][r]["pid"].get<int>(); }
// A zombie (exited, not reaped yet) counts as gone.
inline bool process_exists(int pid) {
  if (::kill(pid, 0) != 0) return false;
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  return !(close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z');
}

// What `latest` holds after a checkpoint of `step`.
inline std::string latest_line(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%06lld\n", static_cast<long long>(step));
  return buf;
}

}  // namespace e2e
