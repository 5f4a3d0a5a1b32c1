// The vit_hpc command line called in-process on every rank (MPI already
// initialised by the test harness): a problem on any rank, even on one rank
// only, makes EVERY rank return 2 without calling the run function, and only
// the first failing rank prints. Runs on 2 and 3 ranks.
#define BOOST_TEST_MODULE spec_cli_mpi
#include <boost/test/unit_test.hpp>

#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "common/mpi_main.h"
#include "io/cli.h"

namespace {

const std::string kData = VIT_SOURCE_DIR "/tests/io/data/";

struct CliResult {
  int status = -1;
  int runs = 0;     // calls of the run function on this rank
  std::string out;  // this rank's stdout
  std::string err;  // this rank's stderr
};

// vit_cli_main with `args` (after the program name); the run function counts
// its calls and returns 7, so its status is told apart from the CLI's own.
CliResult cli(const std::vector<std::string>& args) {
  std::vector<std::string> words = {"vit_hpc"};
  words.insert(words.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);

  CliResult r;
  std::ostringstream out, err;
  std::streambuf* old_out = std::cout.rdbuf(out.rdbuf());
  std::streambuf* old_err = std::cerr.rdbuf(err.rdbuf());
  r.status = vit::vit_cli_main(static_cast<int>(words.size()), argv.data(),
                               [&](const vit::ExperimentSpec&, const std::string&) {
                                 ++r.runs;
                                 return 7;
                               });
  std::cout.rdbuf(old_out);
  std::cerr.rdbuf(old_err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

}  // namespace

BOOST_AUTO_TEST_CASE(bad_spec_every_rank_returns_2_and_rank_0_prints) {
  const std::string spec = kData + "wrong_type.yaml";
  const CliResult r = cli({spec});
  BOOST_TEST(r.status == 2);
  BOOST_TEST(r.runs == 0);
  BOOST_TEST(r.err == (vit_mpi_rank() == 0 ? spec + ":4: train.lr: expected a number, got 'fast'\n" : ""));
}

BOOST_AUTO_TEST_CASE(a_problem_on_one_rank_only_stops_every_rank) {
  // Only the last rank gets a broken override: the others must not run.
  const int last = vit_mpi_size() - 1;
  std::vector<std::string> args = {kData + "good.yaml"};
  if (vit_mpi_rank() == last) args.push_back("--set=train.lr=abc");
  const CliResult r = cli(args);
  BOOST_TEST(r.status == 2);
  BOOST_TEST(r.runs == 0);
  const std::string expected = "vit_hpc: rank " + std::to_string(last) + " of " + std::to_string(vit_mpi_size()) +
                               ":\n--set train.lr=abc: train.lr: expected a number, got 'abc'\n";
  BOOST_TEST(r.err == (vit_mpi_rank() == last ? expected : ""));
}

BOOST_AUTO_TEST_CASE(valid_spec_runs_once_per_rank) {
  const CliResult r = cli({kData + "good.yaml", "--set", "train.epochs=2"});
  BOOST_TEST(r.status == 7);
  BOOST_TEST(r.runs == 1);
  BOOST_TEST(r.err == "");
}

BOOST_AUTO_TEST_CASE(layout_depends_on_the_world_size) {
  // tp_size 2 fits 2 ranks, not 3.
  const CliResult r = cli({kData + "tp2.yaml"});
  if (vit_mpi_size() % 2 == 0) {
    BOOST_TEST(r.status == 7);
    BOOST_TEST(r.runs == 1);
  } else {
    BOOST_TEST(r.status == 2);
    BOOST_TEST(r.runs == 0);
    BOOST_TEST((r.err.find("does not divide the world size " + std::to_string(vit_mpi_size())) !=
                std::string::npos) == (vit_mpi_rank() == 0));
  }
}

BOOST_AUTO_TEST_CASE(check_prints_on_rank_0_only_and_runs_nothing) {
  const CliResult r = cli({"--check", kData + "good.yaml"});
  BOOST_TEST(r.status == 0);
  BOOST_TEST(r.runs == 0);
  BOOST_TEST((r.out.rfind("# vit_hpc --check: ", 0) == 0) == (vit_mpi_rank() == 0));
  if (vit_mpi_rank() != 0) BOOST_TEST(r.out == "");
}
