// What the resume tests share (test_resume, test_resume_gemini,
// test_resume_hybrid): vit_hpc runs whose log is appended to (a resumed run
// keeps its earlier parts), their checkpoint and export folders, and the
// comparisons of step lines: bit for bit for an exact resume, within a
// relative bound after a change of plugin or layout.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>

#include "e2e_util.h"

namespace e2e {

inline const std::string kNoEval = " --set eval.enabled=false --set eval.test_at_end=false ";

inline std::string ck(const std::string& name) { return scratch() + "/ck_" + name; }
inline std::string export_dir(const std::string& name) { return scratch() + "/export_" + name; }
inline std::string exported(const std::string& name) { return slurp(export_dir(name) + "/model.safetensors"); }

// vit_hpc on the base spec plus `extra`; its output is appended to <log>.log
// (<name>.log by default).
inline int run_appending(int ranks, const std::string& name, const std::string& extra, const std::string& log = "") {
  return sh(mpirun(ranks) + kBin + "/vit_hpc " + kSpec + " --set data.path=" + kData +
            " --set run.output_dir=" + scratch() + " --set run.name=" + name +
            " --set run.progress=false --set run.cpu_threads=1 " + extra + " >> " + scratch() + "/" +
            (log.empty() ? name : log) + ".log 2>&1");
}

inline std::vector<json> lines_of(const std::string& run, const std::string& type, int rank = 0) {
  return of_type(read_jsonl(scratch() + "/" + run + "/rank_" + std::to_string(rank) + ".jsonl"), type);
}

// Step numbers of a run's rank-0 step lines, in file order.
inline std::vector<int64_t> step_numbers(const std::string& run) {
  std::vector<int64_t> out;
  for (const json& l : lines_of(run, "step")) out.push_back(l["step"].get<int64_t>());
  return out;
}
inline std::vector<int64_t> one_to(int64_t n) {
  std::vector<int64_t> v;
  for (int64_t i = 1; i <= n; ++i) v.push_back(i);
  return v;
}

// The step lines of both runs agree bit for bit on steps [from, to].
inline void same_steps(const std::string& a, const std::string& b, int64_t from, int64_t to) {
  std::map<int64_t, json> sa, sb;
  for (const json& l : lines_of(a, "step")) sa[l["step"].get<int64_t>()] = l;
  for (const json& l : lines_of(b, "step")) sb[l["step"].get<int64_t>()] = l;
  for (int64_t s = from; s <= to; ++s) {
    BOOST_TEST_CONTEXT(a << " vs " << b << ", step " << s) {
      BOOST_TEST_REQUIRE(sa.count(s) == 1u);
      BOOST_TEST_REQUIRE(sb.count(s) == 1u);
      for (const char* f : {"loss", "grad_norm", "lr", "epoch", "loss_scale", "skipped"}) {
        BOOST_TEST(sa[s][f] == sb[s][f], f);  // JSON keeps every digit of a double
      }
    }
  }
}

// `run` resumed after step `first - 1` under another plugin or layout: its
// step lines (all of them, steps first..last of `ref`) follow the
// uninterrupted `ref` with the same lr, and loss and grad norm within
// `bound` relative; the worst differences are printed.
inline void steps_follow(const std::string& run, const std::string& ref_run, int64_t first, double bound) {
  const auto ref = lines_of(ref_run, "step"), got = lines_of(run, "step");
  BOOST_TEST_REQUIRE(ref.size() >= static_cast<size_t>(first), ref_run);
  BOOST_TEST_REQUIRE(got.size() == ref.size() - static_cast<size_t>(first - 1),
                     run << ": " << got.size() << " step lines");
  double worst_loss = 0, worst_norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const json& r = ref[i + static_cast<size_t>(first - 1)];
    BOOST_TEST_CONTEXT(run << " vs " << ref_run << ", step " << first + static_cast<int64_t>(i)) {
      BOOST_TEST(got[i]["step"] == r["step"]);
      BOOST_TEST(got[i]["lr"] == r["lr"]);
      const double l = got[i]["loss"].get<double>(), l0 = r["loss"].get<double>();
      const double g = got[i]["grad_norm"].get<double>(), g0 = r["grad_norm"].get<double>();
      BOOST_TEST(l == l0, boost::test_tools::tolerance(bound));
      BOOST_TEST(g == g0, boost::test_tools::tolerance(bound));
      worst_loss = std::max(worst_loss, std::abs(l - l0) / std::abs(l0));
      worst_norm = std::max(worst_norm, std::abs(g - g0) / std::abs(g0));
    }
  }
  BOOST_TEST_MESSAGE(run << " vs " << ref_run << ", from step " << first << ": losses within " << worst_loss
                         << ", grad norms within " << worst_norm << " relative");
}

// The one evaluation line of `run` (a resume that continued a checkpoint's
// weight average under another plugin or layout) is of the average and
// matches `ref_run`'s: the same count, loss within 1e-5 relative, and the
// accuracy within one image (a sample on the decision boundary may flip under
// another summation order).
inline void same_ema_eval(const std::string& run, const std::string& ref_run) {
  const auto ref = lines_of(ref_run, "eval"), got = lines_of(run, "eval");
  BOOST_TEST_REQUIRE(ref.size() == 1u);
  BOOST_TEST_REQUIRE(got.size() == 1u);
  BOOST_TEST(got[0]["weights"] == "ema");
  BOOST_TEST(got[0]["count"] == ref[0]["count"]);
  BOOST_TEST(got[0]["loss"].get<double>() == ref[0]["loss"].get<double>(), boost::test_tools::tolerance(1e-5));
  BOOST_TEST(std::abs(got[0]["accuracy"].get<double>() - ref[0]["accuracy"].get<double>()) <=
             1.0 / ref[0]["count"].get<double>() + 1e-12);
}

}  // namespace e2e
