// The vit_hpc command line end to end: vit_spec_check_cli (the real CLI code
// with a run function that only reports) launched as a child process, alone
// or under mpirun, checking exit statuses, that messages are printed once,
// and that --help / --print-spec need no MPI.
//
// Per-rank exit statuses: mpirun reports only one, so each rank runs
// through `sh -c 'driver ...; echo "rank R status $?"'` and the test reads
// every rank's line.
#define BOOST_TEST_MODULE spec_cli
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "io/spec.h"

namespace {

const std::string kData = VIT_SOURCE_DIR "/tests/io/data/";
const std::string kDriver = VIT_SPEC_CLI;

struct Result {
  int status = -1;  // exit status; -1 when killed by a signal
  std::string output;  // stdout and stderr together
};

Result shell(const std::string& command) {
  Result r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  BOOST_REQUIRE(pipe != nullptr);
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.output.append(buf, n);
  const int raw = pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

// `timeout` turns a hang into status 124 instead of a stuck test.
std::string mpirun(int np) {
  return "timeout 120 " VIT_MPIEXEC " " VIT_MPIRUN_FLAGS " -np " + std::to_string(np) + " ";
}

// Every rank runs the driver and reports its own exit status.
std::string mpirun_each_rank(int np, const std::string& args) {
  return mpirun(np) + "sh -c '\"$0\" \"$@\"; echo \"rank $OMPI_COMM_WORLD_RANK status $?\"' " + kDriver + " " +
         args;
}

size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

}  // namespace

BOOST_AUTO_TEST_CASE(help_needs_no_mpi) {
  // A bogus point-to-point layer makes any MPI_Init fail: --help must not call it.
  const Result r = shell("OMPI_MCA_pml=no_such_pml " + kDriver + " --help");
  BOOST_TEST_INFO(r.output);
  BOOST_TEST(r.status == 0);
  BOOST_TEST(r.output.find("Usage:") != std::string::npos);
  BOOST_TEST(r.output.find("--set section.field=value") != std::string::npos);
  BOOST_TEST(r.output.find("--print-spec") != std::string::npos);
  // The same bogus layer does break a command that needs MPI (so the check above can fail).
  const Result with_mpi = shell("OMPI_MCA_pml=no_such_pml " + kDriver + " " + kData + "good.yaml --check");
  BOOST_TEST(with_mpi.status != 0);
}

BOOST_AUTO_TEST_CASE(print_spec_needs_no_mpi_and_reads_back_as_the_defaults) {
  const Result r = shell("OMPI_MCA_pml=no_such_pml " + kDriver + " --print-spec");
  BOOST_TEST(r.status == 0);
  const std::string path = VIT_BINARY_DIR "/test_spec_cli_schema.yaml";
  std::ofstream(path) << r.output;
  BOOST_TEST(vit::spec_to_json(vit::load_spec(path, {})) == vit::spec_to_json(vit::ExperimentSpec{}));
  // Under mpirun it prints once, not once per rank.
  const Result twice = shell(mpirun(2) + kDriver + " --print-spec");
  BOOST_TEST(twice.status == 0);
  BOOST_TEST(count(twice.output, "lr: 0.0002") == 1u);
}

BOOST_AUTO_TEST_CASE(bad_spec_every_rank_exits_2_and_the_message_is_printed_once) {
  const std::string spec = kData + "unknown_key.yaml";
  const Result r = shell(mpirun_each_rank(2, spec));
  BOOST_TEST_INFO(r.output);
  BOOST_TEST(r.output.find("rank 0 status 2") != std::string::npos);
  BOOST_TEST(r.output.find("rank 1 status 2") != std::string::npos);
  BOOST_TEST(count(r.output, spec + ":7: model.hiden: unknown field (did you mean 'model.hidden'?)\n") == 1u);
  BOOST_TEST(r.output.find("would run") == std::string::npos);
  // And mpirun itself fails with that status.
  BOOST_TEST(shell(mpirun(2) + kDriver + " " + spec).status == 2);
}

BOOST_AUTO_TEST_CASE(layout_impossible_for_three_ranks_stops_every_rank) {
  const std::string spec = kData + "tp2.yaml";
  const Result r = shell(mpirun_each_rank(3, spec));
  BOOST_TEST_INFO(r.output);
  for (int rank = 0; rank < 3; ++rank) {
    BOOST_TEST(r.output.find("rank " + std::to_string(rank) + " status 2") != std::string::npos);
  }
  BOOST_TEST(count(r.output, spec + ":11: plugin.tp_size: tp_size 2 x pp_size 1 = 2 does not divide the world size "
                                    "3 (allowed: a number of ranks that is a multiple of 2)\n") == 1u);
  // The same file is fine on 2 ranks.
  const Result ok = shell(mpirun(2) + kDriver + " " + spec);
  BOOST_TEST_INFO(ok.output);
  BOOST_TEST(ok.status == 0);
  BOOST_TEST(count(ok.output, "would run vit_run from " + spec) == 2u);
}

BOOST_AUTO_TEST_CASE(check_prints_the_resolved_spec_once_and_runs_nothing) {
  const std::string spec = kData + "good.yaml";
  const Result r = shell(mpirun(2) + kDriver + " " + spec + " --check --set train.lr=0.002 --set plugin.tf32=off");
  BOOST_TEST_INFO(r.output);
  BOOST_TEST(r.status == 0);
  BOOST_TEST(count(r.output, "# vit_hpc --check: " + spec + " is valid for 2 ranks (dp 2 x pp 1 x tp 1)\n") == 1u);
  BOOST_TEST(count(r.output, "  lr: 0.002 ") == 1u);
  BOOST_TEST(count(r.output, "# --set train.lr=0.002\n") == 1u);
  BOOST_TEST(count(r.output, "  tf32: false ") == 1u);
  BOOST_TEST(count(r.output, "  name: \"tiny_cpu\" ") == 1u);
  BOOST_TEST(r.output.find("would run") == std::string::npos);
  // The explicit command word does the same; no spec at all checks the defaults.
  BOOST_TEST(shell(kDriver + " train " + spec + " --check").status == 0);
  const Result defaults = shell(kDriver + " --check");
  BOOST_TEST(defaults.status == 0);
  BOOST_TEST(defaults.output.find("# vit_hpc --check: the defaults is valid for 1 rank") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_valid_spec_runs_on_every_rank) {
  const std::string spec = kData + "good.yaml";
  const Result r = shell(mpirun(2) + kDriver + " --set run.name=cli_run " + spec);
  BOOST_TEST_INFO(r.output);
  BOOST_TEST(r.status == 0);
  BOOST_TEST(count(r.output, "would run cli_run from " + spec + " on rank 0 of 2\n") == 1u);
  BOOST_TEST(count(r.output, "would run cli_run from " + spec + " on rank 1 of 2\n") == 1u);
}

BOOST_AUTO_TEST_CASE(command_line_errors_exit_2_on_every_rank) {
  const Result bad_option = shell(mpirun_each_rank(2, "--sett train.lr=1"));
  BOOST_TEST_INFO(bad_option.output);
  BOOST_TEST(bad_option.output.find("rank 0 status 2") != std::string::npos);
  BOOST_TEST(bad_option.output.find("rank 1 status 2") != std::string::npos);
  BOOST_TEST(count(bad_option.output, "vit_hpc: unrecognised option '--sett' (see vit_hpc --help)\n") == 1u);

  const Result bad_command = shell(kDriver + " trian " + kData + "good.yaml");
  BOOST_TEST(bad_command.status == 2);
  BOOST_TEST(bad_command.output ==
             "vit_hpc: unknown command 'trian' (allowed: train, predict, export, or a spec file; see vit_hpc --help)\n");

  const Result two_specs = shell(kDriver + " " + kData + "good.yaml " + kData + "tp2.yaml");
  BOOST_TEST(two_specs.status == 2);
  BOOST_TEST(two_specs.output.find("vit_hpc: too many positional options") == 0u);
}

BOOST_AUTO_TEST_CASE(an_exception_in_one_rank_aborts_every_rank) {
  const Result r =
      shell(mpirun(2) + kDriver + " " + kData + "good.yaml --set run.name=throw_on_rank_1");
  BOOST_TEST_INFO(r.output);
  BOOST_TEST(r.status != 0);
  BOOST_TEST(r.status != 124);  // 124: `timeout` had to kill a hang
  BOOST_TEST(r.output.find("vit_hpc: rank 1 of 2: ") != std::string::npos);
  BOOST_TEST(r.output.find("deliberate failure on rank 1") != std::string::npos);
}
