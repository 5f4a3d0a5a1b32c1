// Training-state checkpoints end to end on the CPU, through mpirun, on the
// Beans images (the prepare_beans_64 fixture), and the job that never hangs
// or lies about how it ended (issue 11):
//   - exact resume: N steps straight vs stop + resume, on 1 and 2 ranks,
//     mid-epoch, at an epoch's last step, across an epoch boundary: the
//     step lines (loss, grad norm), epoch and evaluation lines and the final
//     weights bit for bit;
//   - a stop signal (SIGUSR1 to mpirun) saves, marks the run interrupted,
//     exits 75, and the same command resumes bit for bit;
//   - a rank killed with SIGKILL: the run is seen as dead, and resuming from
//     the last checkpoint reaches the weights of an uninterrupted run, bit
//     for bit;
//   - a 4-rank torch_ddp checkpoint resumed by low_level_zero on 2 ranks and
//     by one rank: the next losses within the tolerance of a layout change;
//   - the collective watchdog ends a job whose rank was SIGSTOPped;
//   - a diverged run (lr 1e30) stops as failed after
//     train.max_nonfinite_steps;
//   - a full disk during a checkpoint leaves the previous one and `latest`
//     intact;
//   - resume refusals before training; today's vit_hpc resumes from the
//     frozen version-1 fixture;
//   - the recipe's state (format 2): with the weight average and
//     best-model selection on, stop + resume on 1 and 2 ranks gives the same
//     step, epoch and eval lines ("ema" and "best") and exported weights bit
//     for bit; the average crosses from torch_ddp to low_level_zero; a
//     checkpoint without them (the v1 fixture) resumes and says so once;
//   - a stop signal without checkpoint.dir writes nothing anywhere.
#define BOOST_TEST_MODULE resume
#include <boost/test/unit_test.hpp>

#include <signal.h>

#include <map>

#include "resume_util.h"

using namespace e2e;

namespace {

// Small and fast (17 tokens): ~30 steps/s on 2 ranks with 100 images a step.
const std::string kTiny =
    " --set model.patch_size=16 --set model.hidden=64 --set model.mlp_dim=128 --set model.depth=2 --set model.heads=4 ";
// Slow enough to act on a run while it trains (~0.3 s a step on 2 ranks).
const std::string kMedium = " --set model.depth=2 --set train.batch_size=8 ";

// vit_hpc on the base spec plus `extra` (output appended to <log>.log).
int run_vit(int ranks, const std::string& name, const std::string& extra, const std::string& log = "") {
  return run_appending(ranks, name, extra, log);
}

// The uninterrupted reference of the medium runs (tests 3 and 4 share it).
const std::string kMediumSteps = " --set train.steps=24 ";
void medium_straight() {
  static bool done = false;
  if (done) return;
  BOOST_TEST_REQUIRE(run_vit(2, "m_straight", kMedium + kNoEval + kMediumSteps +
                                                  " --set checkpoint.export_hf=" + export_dir("m_straight")) == 0);
  done = true;
}

}  // namespace

BOOST_AUTO_TEST_CASE(exact_resume_on_one_rank_mid_epoch) {
  // 1034 images, 16 a step: 64 steps an epoch, so step 10 is mid-epoch.
  const std::string common = kTiny + kNoEval + " --set train.steps=20 --set train.batch_size=16 ";
  BOOST_TEST_REQUIRE(run_vit(1, "r1_straight", common + " --set checkpoint.export_hf=" + export_dir("r1_straight")) == 0);
  const std::string resumable = common + " --set checkpoint.dir=" + ck("r1") + " --set checkpoint.every_steps=4" +
                                " --set checkpoint.export_hf=" + export_dir("r1");
  BOOST_TEST_REQUIRE(run_vit(1, "r1", resumable + " --set checkpoint.stop_after_steps=10") == 75);
  json m = manifest("r1");
  BOOST_TEST(m["status"] == "interrupted");
  BOOST_TEST(m["interrupted"]["step"] == 10);
  BOOST_TEST(slurp(ck("r1") + "/latest") == "step_000010\n");
  BOOST_TEST(fs::exists(ck("r1") + "/step_000008/index.json"));  // every_steps 4, keep_last 2
  BOOST_TEST(!fs::exists(ck("r1") + "/step_000004"));
  BOOST_TEST(step_numbers("r1") == one_to(10));

  BOOST_TEST_REQUIRE(run_vit(1, "r1", resumable) == 0);
  m = manifest("r1");
  BOOST_TEST(m["status"] == "completed");
  BOOST_TEST_REQUIRE(m["resumes"].size() == 1u);
  BOOST_TEST(m["resumes"][0]["from_step"] == 10);
  BOOST_TEST(m["resumes"][0]["same_folder"] == true);
  BOOST_TEST(step_numbers("r1") == one_to(20));  // the file continues: no step twice, none missing
  same_steps("r1", "r1_straight", 1, 20);
  BOOST_TEST(exported("r1") == exported("r1_straight"));  // the final weights, bit for bit
  // The final checkpoint holds the same weights: vit_hpc export writes the same file.
  BOOST_TEST_REQUIRE(sh(kBin + "/vit_hpc export --checkpoint " + ck("r1") + " --output " + export_dir("r1_ck") +
                        " > " + scratch() + "/r1_ck.log 2>&1") == 0);
  BOOST_TEST(exported("r1_ck") == exported("r1_straight"));
}

BOOST_AUTO_TEST_CASE(exact_resume_on_two_ranks_across_epoch_boundaries) {
  // 2 x 50 images a step: 10 steps an epoch; validation after each epoch.
  const std::string common = kTiny + " --set train.steps=20 --set train.batch_size=50 --set eval.test_at_end=false ";
  BOOST_TEST_REQUIRE(run_vit(2, "r2_straight", common + " --set checkpoint.export_hf=" + export_dir("r2_straight")) == 0);
  // Stopped mid-epoch (after 7), then after 6 more (13: across the end of
  // epoch 1, its summary and evaluation done in the resumed part), then to the end.
  const std::string cut = common + " --set checkpoint.dir=" + ck("r2_cut") + " --set checkpoint.export_hf=" +
                          export_dir("r2_cut");
  BOOST_TEST_REQUIRE(run_vit(2, "r2_cut", cut + " --set checkpoint.stop_after_steps=7") == 75);
  BOOST_TEST_REQUIRE(run_vit(2, "r2_cut", cut + " --set checkpoint.stop_after_steps=6") == 75);
  BOOST_TEST(manifest("r2_cut")["interrupted"]["step"] == 13);
  BOOST_TEST_REQUIRE(run_vit(2, "r2_cut", cut) == 0);
  // Stopped at the last step of epoch 1, before its summary and evaluation.
  const std::string edge = common + " --set checkpoint.dir=" + ck("r2_edge") + " --set checkpoint.export_hf=" +
                           export_dir("r2_edge");
  BOOST_TEST_REQUIRE(run_vit(2, "r2_edge", edge + " --set checkpoint.stop_after_steps=10") == 75);
  BOOST_TEST(lines_of("r2_edge", "epoch").empty());
  BOOST_TEST_REQUIRE(run_vit(2, "r2_edge", edge) == 0);

  for (const std::string run : {"r2_cut", "r2_edge"}) {
    BOOST_TEST_CONTEXT(run) {
      BOOST_TEST(manifest(run)["status"] == "completed");
      for (int r = 0; r < 2; ++r) {
        std::vector<int64_t> steps;
        for (const json& l : lines_of(run, "step", r)) steps.push_back(l["step"].get<int64_t>());
        BOOST_TEST(steps == one_to(20));
      }
      same_steps(run, "r2_straight", 1, 20);
      // The epoch summaries and evaluations: one each, the same numbers
      // (times aside).
      const auto ea = lines_of(run, "epoch"), eb = lines_of("r2_straight", "epoch");
      BOOST_TEST_REQUIRE(ea.size() == 2u);
      BOOST_TEST_REQUIRE(eb.size() == 2u);
      for (size_t i = 0; i < 2; ++i) {
        BOOST_TEST(ea[i]["avg_loss"] == eb[i]["avg_loss"]);
        BOOST_TEST(ea[i]["steps"] == eb[i]["steps"]);
      }
      const auto va = lines_of(run, "eval"), vb = lines_of("r2_straight", "eval");
      BOOST_TEST_REQUIRE(va.size() == 2u);
      BOOST_TEST_REQUIRE(vb.size() == 2u);
      for (size_t i = 0; i < 2; ++i) {
        BOOST_TEST(va[i]["loss"] == vb[i]["loss"]);
        BOOST_TEST(va[i]["accuracy"] == vb[i]["accuracy"]);
        BOOST_TEST(va[i]["epoch"] == vb[i]["epoch"]);
      }
      BOOST_TEST(exported(run) == exported("r2_straight"));
    }
  }
  BOOST_TEST(manifest("r2_cut")["resumes"].size() == 2u);
}

BOOST_AUTO_TEST_CASE(stop_signal_saves_marks_the_run_interrupted_and_resumes_exactly) {
  medium_straight();
  const std::string args = kMedium + kNoEval + kMediumSteps + " --set checkpoint.dir=" + ck("sig") +
                           " --set checkpoint.export_hf=" + export_dir("sig");
  Background job(2, "sig", args);
  BOOST_TEST_REQUIRE(Background::wait_for([] { return steps_written("sig") >= 4; }, 60));
  BOOST_TEST_REQUIRE(::kill(job.pid(), SIGUSR1) == 0);  // mpirun forwards it to every rank
  BOOST_TEST_REQUIRE(job.wait(60) == 75);
  const json m = manifest("sig");
  BOOST_TEST(m["status"] == "interrupted");
  BOOST_TEST(m["interrupted"]["by"] == "SIGUSR1");
  const int64_t stopped = m["interrupted"]["step"].get<int64_t>();
  BOOST_TEST(stopped < 24);
  BOOST_TEST(step_numbers("sig") == one_to(stopped));
  BOOST_TEST(slurp(ck("sig") + "/latest") == latest_line(stopped));
  BOOST_TEST(contains(log_of("sig"), "stopped after step " + std::to_string(stopped) + " (SIGUSR1)"));

  BOOST_TEST_REQUIRE(run_vit(2, "sig", args) == 0);
  BOOST_TEST(manifest("sig")["status"] == "completed");
  same_steps("sig", "m_straight", 1, 24);
  BOOST_TEST(exported("sig") == exported("m_straight"));

  // SIGTERM to rank 0 alone (as a node's scheduler may deliver it): the
  // ranks agree at the next step boundary, both stop after the same step.
  Background term(2, "sigterm", kTiny + kNoEval + " --set train.steps=100000 --set train.batch_size=8 "
                                                  "--set checkpoint.dir=" + ck("sigterm"));
  BOOST_TEST_REQUIRE(Background::wait_for([] { return steps_written("sigterm") >= 20; }, 60));
  BOOST_TEST_REQUIRE(::kill(rank_pid("sigterm", 0), SIGTERM) == 0);
  BOOST_TEST_REQUIRE(term.wait(60) == 75);
  const json t = manifest("sigterm");
  BOOST_TEST(t["interrupted"]["by"] == "SIGTERM");
  const int64_t at = t["interrupted"]["step"].get<int64_t>();
  BOOST_TEST(lines_of("sigterm", "step", 0).back()["step"] == at);
  BOOST_TEST(lines_of("sigterm", "step", 1).back()["step"] == at);
  BOOST_TEST(slurp(ck("sigterm") + "/latest") == latest_line(at));
}

BOOST_AUTO_TEST_CASE(killed_rank_resumes_from_the_last_checkpoint_bitwise) {
  medium_straight();
  const std::string args = kMedium + kNoEval + kMediumSteps + " --set checkpoint.dir=" + ck("kill") +
                           " --set checkpoint.every_steps=4 --set checkpoint.export_hf=" + export_dir("kill");
  Background job(2, "kill", args);
  BOOST_TEST_REQUIRE(Background::wait_for(
      [] { return steps_written("kill") >= 10 && fs::exists(ck("kill") + "/step_000008/index.json"); }, 60));
  const int victim = rank_pid("kill", 1);
  BOOST_TEST_REQUIRE(::kill(victim, SIGKILL) == 0);
  const int rc = job.wait(60);
  BOOST_TEST(rc != 0);
  BOOST_TEST(rc != -1);
  // Nobody wrote an end: the manifest still says running, and its rank 0 is gone.
  BOOST_TEST(manifest("kill")["status"] == "running");
  // mpirun has returned; its rank 0 ends within moments (on a loaded
  // machine it may still be exiting right now).
  const int rank0 = rank_pid("kill", 0);
  BOOST_TEST(Background::wait_for([&] { return !process_exists(rank0); }, 20));
  BOOST_TEST(sh(kBin + "/vit_results " + scratch() + "/kill > " + scratch() + "/kill_results.md 2> " + scratch() +
                "/kill_results.err") == 0);
  BOOST_TEST(contains(slurp(scratch() + "/kill_results.err"), "died: the manifest says \"running\" but its rank 0"));

  const std::string last = slurp(ck("kill") + "/latest");
  BOOST_TEST_REQUIRE(run_vit(2, "kill", args) == 0);
  const json m = manifest("kill");
  BOOST_TEST(m["status"] == "completed");
  BOOST_TEST(m["resumes"][0]["checkpoint"] == ck("kill") + "/" + last.substr(0, last.size() - 1));
  BOOST_TEST(step_numbers("kill") == one_to(24));
  same_steps("kill", "m_straight", 1, 24);
  BOOST_TEST(exported("kill") == exported("m_straight"));
}

BOOST_AUTO_TEST_CASE(torch_ddp_checkpoint_of_4_ranks_resumes_on_2_ranks_of_low_level_zero_and_on_1_rank) {
  // The same global batch of 16 throughout: 4 x 4, 2 x 8, 1 x 16.
  const std::string common = kTiny + kNoEval + " --set train.steps=12 --set train.lr=2e-3 ";
  BOOST_TEST_REQUIRE(run_vit(4, "x4_straight", common + " --set train.batch_size=4") == 0);
  BOOST_TEST_REQUIRE(run_vit(4, "x4_cut", common + " --set train.batch_size=4 --set checkpoint.dir=" + ck("x4") +
                                              " --set checkpoint.stop_after_steps=6") == 75);
  same_steps("x4_cut", "x4_straight", 1, 6);
  uint64_t shard_bytes = 0;
  for (const auto& e : fs::directory_iterator(ck("x4") + "/step_000006")) {
    if (e.path().extension() == ".safetensors") shard_bytes += fs::file_size(e.path());
  }
  // Each resume gets its own copy (it writes checkpoints of its own there).
  for (const std::string c : {"x2_zero", "x1"}) fs::copy(ck("x4"), ck(c), fs::copy_options::recursive);
  BOOST_TEST_REQUIRE(run_vit(2, "x2_zero", common + " --set train.batch_size=8 --set plugin.name=low_level_zero "
                                                    "--set plugin.stage=2 --set checkpoint.dir=" + ck("x2_zero")) == 0);
  BOOST_TEST_REQUIRE(run_vit(1, "x1", common + " --set train.batch_size=16 --set checkpoint.dir=" + ck("x1")) == 0);
  const std::string zlog = log_of("x2_zero"), olog = log_of("x1");
  BOOST_TEST(contains(zlog, "the plugin changes from torch_ddp to low_level_zero stage 2"), zlog);
  BOOST_TEST(contains(zlog, "the layout changes from 4 ranks (dp 4) to 2 ranks (dp 2)"), zlog);
  BOOST_TEST(contains(olog, "the layout changes from 4 ranks (dp 4) to 1 rank (dp 1)"), olog);
  BOOST_TEST(!contains(zlog, "global batch changes"));
  // Each rank reads only what it holds: a ZeRO rank half of the state, one
  // rank all of it (the shard files hold headers besides: within 10%).
  auto bytes_read = [](const std::string& log) {
    const size_t at = log.find("this rank read ");
    BOOST_TEST_REQUIRE(at != std::string::npos);
    return std::stod(log.substr(at + 15));
  };
  BOOST_TEST(bytes_read(zlog) > 0.40 * shard_bytes);
  BOOST_TEST(bytes_read(zlog) < 0.55 * shard_bytes);
  BOOST_TEST(bytes_read(olog) > 0.90 * shard_bytes);
  BOOST_TEST(bytes_read(olog) <= 1.0 * shard_bytes);
  // The next steps: 7 to 12 are new runs that start at step 7. Under
  // another layout only the order of the fp32 gradient sums changes (per-
  // rank partial sums, then the reduction), as between 1, 2 and 4 ranks in
  // test_e2e (measured there: losses within 5e-7, grad norms within 1.5e-6
  // relative over 6 steps; here, on 2026-12-01: within 9e-8 and 7e-8):
  // bound 1e-5 relative for both.
  for (const std::string run : {"x2_zero", "x1"}) {
    steps_follow(run, "x4_straight", 7, 1e-5);
    BOOST_TEST(manifest(run)["resumes"][0]["checkpoint_world_size"] == 4);
    BOOST_TEST(manifest(run)["resumes"][0]["same_folder"] == false);
  }
  // Another global batch (8 instead of 16): said, and the epoch goes on
  // from the next unseen image (96 = 6 steps of 16 = step 12 of 8).
  fs::copy(ck("x4"), ck("x1_half"), fs::copy_options::recursive);
  BOOST_TEST_REQUIRE(run_vit(1, "x1_half", common + " --set train.batch_size=8 --set checkpoint.dir=" + ck("x1_half")) == 0);
  const std::string hlog = log_of("x1_half");
  BOOST_TEST(contains(hlog, "the global batch changes from 16 to 8: epoch 1 continues at image 96 of its order "
                            "(step 12 of 129)"), hlog);
  BOOST_TEST((step_numbers("x1_half") == std::vector<int64_t>{7, 8, 9, 10, 11, 12}));
}

BOOST_AUTO_TEST_CASE(collective_watchdog_ends_a_job_whose_rank_was_stopped) {
  const double timeout = 5;
  Background job(2, "watchdog", kMedium + kNoEval + " --set train.steps=1000 --set run.collective_timeout_s=5");
  BOOST_TEST_REQUIRE(Background::wait_for([] { return steps_written("watchdog") >= 3; }, 60));
  const int stopped = rank_pid("watchdog", 1);
  BOOST_TEST_REQUIRE(::kill(stopped, SIGSTOP) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = job.wait(timeout + 60);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rc == -1) {  // never leave a stopped job behind: every rank, then mpirun
    for (int r = 0; r < 2; ++r) ::kill(rank_pid("watchdog", r), SIGKILL);
    ::kill(job.pid(), SIGKILL);
  }
  BOOST_TEST_REQUIRE(rc != -1);
  BOOST_TEST(rc == 3);  // comm::kExitCollectiveTimeout, through MPI_Abort
  BOOST_TEST(took <= timeout + 30, took << " s");
  const std::string log = log_of("watchdog");
  BOOST_TEST(contains(log, "collective timeout on rank 0: all_reduce"), log);
  BOOST_TEST(contains(log, "over ranks 0,1 at step "), log);
  BOOST_TEST(contains(log, "did not arrive: rank 1 (no answer: stopped, hung or dead)"), log);
  const json m = manifest("watchdog");
  BOOST_TEST(m["status"] == "failed");
  BOOST_TEST(contains(m["error"].get<std::string>(), "did not arrive: rank 1"));
  // mpirun ends the stopped rank too (SIGKILL works on a stopped process);
  // under load its end may trail mpirun's by a moment.
  BOOST_TEST(Background::wait_for([&] { return !process_exists(stopped); }, 10));
  if (process_exists(stopped)) ::kill(stopped, SIGKILL);
}

BOOST_AUTO_TEST_CASE(diverged_run_stops_as_failed_after_max_nonfinite_steps) {
  const int rc = run_vit(2, "nan", kTiny + kNoEval + " --set train.steps=50 --set train.batch_size=8 "
                                                     "--set train.lr=1e30 --set train.max_nonfinite_steps=3");
  BOOST_TEST(rc == 1);
  const json m = manifest("nan");
  BOOST_TEST(m["status"] == "failed");
  BOOST_TEST(contains(m["error"].get<std::string>(), "not finite 3 steps in a row (train.max_nonfinite_steps 3)"));
  const auto steps = lines_of("nan", "step");
  BOOST_TEST_REQUIRE(steps.size() >= 3u);
  BOOST_TEST(steps.size() < 50u);
  // The metrics files write NaN and Inf as null (docs/metrics.md).
  auto finite = [](const json& v) { return v.is_number() && std::isfinite(v.get<double>()); };
  for (size_t i = steps.size() - 3; i < steps.size(); ++i) {
    BOOST_TEST(!(finite(steps[i]["loss"]) && finite(steps[i]["grad_norm"])), "step " << i + 1);
    BOOST_TEST(steps[i]["skipped"] == true, "step " << i + 1);  // nothing was applied
  }
  BOOST_TEST(finite(steps[0]["loss"]));  // it trained before it diverged
}

BOOST_AUTO_TEST_CASE(full_disk_during_a_checkpoint_keeps_the_previous_one) {
  // A tmpfs a little larger than one checkpoint (117635 parameters x 3 parts
  // x 4 bytes = 1.41 MB, plus headers): the first fits, the second cannot.
  const std::string mnt = scratch() + "/small_disk";
  fs::create_directories(mnt);
  if (sh("mount -t tmpfs -o size=2200k vit_resume_test " + mnt + " > /dev/null 2>&1") != 0) {
    BOOST_TEST_MESSAGE("SKIPPED: cannot mount a tmpfs here (needs root); the full-disk case is not checked");
    return;
  }
  struct Unmount {
    std::string at;
    ~Unmount() { sh("umount " + at); }
  } unmount{mnt};
  const std::string args = kTiny + kNoEval + " --set train.steps=10 --set train.batch_size=8 --set checkpoint.dir=" +
                           mnt + "/ck --set checkpoint.every_steps=2 --set checkpoint.keep_last=1";
  BOOST_TEST(run_vit(2, "disk_full", args) == 1);
  const json m = manifest("disk_full");
  BOOST_TEST(m["status"] == "failed");
  const std::string err = m["error"].get<std::string>();
  BOOST_TEST(contains(err, "checkpoint step_000004 could not be written"), err);
  BOOST_TEST(contains(err, "No space left on device"), err);
  BOOST_TEST(contains(err, "the previous one, " + mnt + "/ck/step_000002, is intact"), err);
  BOOST_TEST(slurp(mnt + "/ck/latest") == "step_000002\n");
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(mnt + "/ck")) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  BOOST_TEST(left == (std::vector<std::string>{"latest", "step_000002"}));  // no temporary folder left
  // The previous checkpoint is whole: every CRC checks out.
  BOOST_TEST(sh(kBin + "/vit_hpc export --checkpoint " + mnt + "/ck --output " + export_dir("disk_full") + " > " +
                scratch() + "/disk_full_export.log 2>&1") == 0);

  // checkpoint.continue_on_error: reported, training goes on to the end.
  fs::remove_all(mnt + "/ck");
  BOOST_TEST(run_vit(2, "disk_full_go_on", args + " --set checkpoint.continue_on_error=true") == 0);
  BOOST_TEST(manifest("disk_full_go_on")["status"] == "completed");
  BOOST_TEST(contains(log_of("disk_full_go_on"), "warning: checkpoint step_000004 could not be written"));
  BOOST_TEST(slurp(mnt + "/ck/latest") == "step_000002\n");
  BOOST_TEST(step_numbers("disk_full_go_on") == one_to(10));
}

BOOST_AUTO_TEST_CASE(resume_refusals_before_training) {
  const std::string args = kTiny + kNoEval + " --set train.steps=4 --set train.batch_size=8 --set checkpoint.dir=" +
                           ck("refuse");
  BOOST_TEST_REQUIRE(run_vit(2, "refuse", args) == 0);
  // resume false with checkpoints there: they would mix.
  BOOST_TEST(run_vit(2, "refuse_b", args + " --set checkpoint.resume=false") == 2);
  BOOST_TEST(contains(log_of("refuse_b"), "checkpoint.resume: false, but " + ck("refuse") +
                                              " already holds checkpoints (newest: step_000004)"));
  BOOST_TEST(!fs::exists(scratch() + "/refuse_b/manifest.json"));
  // resume true with nothing there.
  BOOST_TEST(run_vit(2, "refuse_c", kTiny + " --set checkpoint.dir=" + ck("nothing") + " --set checkpoint.resume=true") == 2);
  BOOST_TEST(contains(log_of("refuse_c"), "checkpoint.resume: true, but " + ck("nothing") +
                                              " holds no complete checkpoint"));
  // Another model.
  BOOST_TEST(run_vit(2, "refuse_d", args + " --set model.mlp_dim=256") == 2);
  BOOST_TEST(contains(log_of("refuse_d"), "blocks.0.mlp.fc1.weight has shape [128, 64] in the checkpoint and [256, 64]"));
  // Its own run folder on another number of ranks: the metrics files are per rank.
  BOOST_TEST(run_vit(1, "refuse", args, "refuse_e") == 2);
  BOOST_TEST(contains(log_of("refuse_e"), "holds the metrics files of 2 ranks and this run has 1"));
  // The refusals are printed once, not once per rank.
  const std::string b = log_of("refuse_b");
  BOOST_TEST(b.find("already holds checkpoints") == b.rfind("already holds checkpoints"));
}

BOOST_AUTO_TEST_CASE(todays_vit_hpc_resumes_from_the_version_1_fixture) {
  const std::string copy = ck("fixture_v1");
  fs::copy(fs::path(VIT_SOURCE_DIR) / "tests/train/fixtures/checkpoint_v1/checkpoints", copy,
           fs::copy_options::recursive);
  // The fixture's run (its README), two more steps.
  const std::string args =
      " --set model.patch_size=16 --set model.hidden=4 --set model.depth=1 --set model.heads=2 --set model.mlp_dim=8"
      " --set train.batch_size=8 --set train.steps=6 --set eval.enabled=false --set checkpoint.dir=" + copy;
  BOOST_TEST_REQUIRE(run_vit(2, "from_fixture", args) == 0);
  const std::string log = log_of("from_fixture");
  BOOST_TEST(contains(log, "weights: resumed from " + copy + "/step_000004 (step 4;"), log);
  BOOST_TEST(contains(log, "the learning-rate schedule differs"), log);  // 6 steps now, 4 then
  BOOST_TEST((step_numbers("from_fixture") == std::vector<int64_t>{5, 6}));
  BOOST_TEST(slurp(copy + "/latest") == "step_000006\n");
}

// ---------------------------------------------------------------------------
// The training recipe's state in checkpoints (format 2): the weight average
// (train.ema_decay) and the best-validation selection (eval.keep_best).
// ---------------------------------------------------------------------------

namespace {

const std::string kRecipe = " --set train.ema_decay=0.9 --set eval.keep_best=true ";

// The eval lines of both runs agree bit for bit, in order (validation with
// the average after each epoch, test with the average and with the best).
void same_evals(const std::string& a, const std::string& b) {
  const auto va = lines_of(a, "eval"), vb = lines_of(b, "eval");
  BOOST_TEST_REQUIRE(va.size() == vb.size(), a << " vs " << b);
  for (size_t i = 0; i < va.size(); ++i) {
    BOOST_TEST_CONTEXT(a << " vs " << b << ", eval line " << i) {
      for (const char* f : {"split", "epoch", "loss", "accuracy", "count", "weights"}) BOOST_TEST(va[i][f] == vb[i][f], f);
    }
  }
}

void same_epochs(const std::string& a, const std::string& b) {
  const auto ea = lines_of(a, "epoch"), eb = lines_of(b, "epoch");
  BOOST_TEST_REQUIRE(ea.size() == eb.size(), a << " vs " << b);
  for (size_t i = 0; i < ea.size(); ++i) {
    BOOST_TEST(ea[i]["avg_loss"] == eb[i]["avg_loss"], a << " epoch " << i + 1);
    BOOST_TEST(ea[i]["steps"] == eb[i]["steps"], a << " epoch " << i + 1);
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(exact_resume_with_weight_average_and_best_model_on_1_and_2_ranks) {
  // 100 images a step (1 x 100 or 2 x 50): 10 steps an epoch, 25 steps
  // (epochs of 10, 10, 5), validation after each, test at the end with the
  // average and with the best weights. Stopped at step 15: mid-epoch 2,
  // after epoch 1's validation chose the first best weights. In this setup
  // epoch 1 stays the best (validation accuracy 0.579, then 0.571 and 0.564,
  // measured 2026-12 on 1 and 2 ranks), so the final test and export use
  // weights that only the checkpoint carried across the stop.
  for (int ranks : {1, 2}) {
    const std::string tag = "ema" + std::to_string(ranks);
    const std::string common = kTiny + kRecipe + " --set train.steps=25 --set train.batch_size=" +
                               std::to_string(100 / ranks) + " ";
    BOOST_TEST_REQUIRE(run_vit(ranks, tag + "_straight",
                               common + " --set checkpoint.export_hf=" + export_dir(tag + "_straight")) == 0);
    const std::string cut = common + " --set checkpoint.dir=" + ck(tag) + " --set checkpoint.export_hf=" +
                            export_dir(tag);
    BOOST_TEST_REQUIRE(run_vit(ranks, tag, cut + " --set checkpoint.stop_after_steps=15") == 75);
    // The checkpoint holds the average and the best state.
    const std::string step15 = ck(tag) + "/step_000015";
    const json index = json::parse(slurp(step15 + "/index.json"));
    BOOST_TEST(index["format_version"] == 2);
    BOOST_TEST(index["parts"] == json({"master", "adam_m", "adam_v", "ema"}));
    BOOST_TEST(index["best_weights"] == "best_weights.safetensors");
    BOOST_TEST(index["files"].contains("best_weights.safetensors"));
    const json state = json::parse(slurp(step15 + "/train_state.json"));
    BOOST_TEST(state["keep_best"]["epoch"] == 1);
    BOOST_TEST(state["keep_best"]["accuracy"] == lines_of(tag + "_straight", "eval")[0]["accuracy"]);

    BOOST_TEST_REQUIRE(run_vit(ranks, tag, cut) == 0);
    BOOST_TEST_CONTEXT(tag) {
      BOOST_TEST(manifest(tag)["status"] == "completed");
      BOOST_TEST(step_numbers(tag) == one_to(25));
      same_steps(tag, tag + "_straight", 1, 25);
      same_epochs(tag, tag + "_straight");
      same_evals(tag, tag + "_straight");
      // 3 validations with the average, the test with the average and with the best.
      const auto ev = lines_of(tag, "eval");
      BOOST_TEST_REQUIRE(ev.size() == 5u);
      for (size_t i = 0; i < 4; ++i) BOOST_TEST(ev[i]["weights"] == "ema");
      BOOST_TEST(ev[4]["weights"] == "best");
      BOOST_TEST(ev[4]["epoch"] == 1, "the best epoch is no longer the one before the stop: the setup no longer "
                                      "checks that the best weights cross it (choose another train.steps)");
      BOOST_TEST(exported(tag) == exported(tag + "_straight"));  // the best weights, bit for bit
      const std::string log = log_of(tag);
      BOOST_TEST(!contains(log, "starts afresh"), log);
      BOOST_TEST(!contains(log, "selection restarts"), log);
    }
  }
}

BOOST_AUTO_TEST_CASE(weight_average_crosses_layouts_torch_ddp_to_low_level_zero) {
  // A 2-rank torch_ddp checkpoint at step 6 resumed by 2-rank low_level_zero
  // stage 2 (global batch 16 both): the average continues. The validation
  // at the end runs with the average; its loss is within the bound of a
  // layout change of test torch_ddp_checkpoint_of_4_ranks_... (1e-5
  // relative: only the order of the fp32 gradient sums differs). Had the
  // average restarted from the step-6 weights, it would weigh those 0.9^6 =
  // 0.53 instead of mixing in steps 1 to 5: far outside that bound.
  const std::string common = kTiny + " --set train.ema_decay=0.9 --set eval.test_at_end=false --set train.steps=12 "
                                     "--set train.lr=2e-3 --set train.batch_size=8 ";
  BOOST_TEST_REQUIRE(run_vit(2, "xe_straight", common) == 0);
  BOOST_TEST_REQUIRE(run_vit(2, "xe_cut", common + " --set checkpoint.dir=" + ck("xe") +
                                              " --set checkpoint.stop_after_steps=6") == 75);
  BOOST_TEST_REQUIRE(run_vit(2, "xe_zero", common + " --set plugin.name=low_level_zero --set plugin.stage=2 "
                                                    "--set checkpoint.dir=" + ck("xe")) == 0);
  const std::string zlog = log_of("xe_zero");
  BOOST_TEST(contains(zlog, "the plugin changes from torch_ddp to low_level_zero stage 2"), zlog);
  BOOST_TEST(!contains(zlog, "starts afresh"), zlog);
  same_ema_eval("xe_zero", "xe_straight");
}

BOOST_AUTO_TEST_CASE(a_checkpoint_without_the_recipe_state_resumes_and_says_so_once) {
  // The version-1 fixture holds neither an average nor a best model: a run
  // with both starts them afresh and says so, once.
  const std::string copy = ck("fixture_v1_recipe");
  fs::copy(fs::path(VIT_SOURCE_DIR) / "tests/train/fixtures/checkpoint_v1/checkpoints", copy,
           fs::copy_options::recursive);
  const std::string args =
      " --set model.patch_size=16 --set model.hidden=4 --set model.depth=1 --set model.heads=2 --set model.mlp_dim=8"
      " --set train.batch_size=8 --set train.steps=6 --set eval.test_at_end=false --set checkpoint.dir=" + copy + kRecipe;
  BOOST_TEST_REQUIRE(run_vit(2, "from_fixture_recipe", args) == 0);
  const std::string log = log_of("from_fixture_recipe");
  const std::string ema_note = "the checkpoint holds no weight average", best_note = "best-model selection restarts";
  BOOST_TEST(contains(log, ema_note), log);
  BOOST_TEST(log.find(ema_note) == log.rfind(ema_note));
  BOOST_TEST(contains(log, best_note), log);
  BOOST_TEST(log.find(best_note) == log.rfind(best_note));
  // Its own checkpoint at the end is of format 2 with both.
  const json index = json::parse(slurp(copy + "/step_000006/index.json"));
  BOOST_TEST(index["format_version"] == 2);
  BOOST_TEST(index["parts"].size() == 4u);
  // And a run without the recipe resumes from that one, ignoring the
  // average and the best state it does not use.
  BOOST_TEST_REQUIRE(run_vit(2, "from_fixture_plain",
                             " --set model.patch_size=16 --set model.hidden=4 --set model.depth=1 --set model.heads=2"
                             " --set model.mlp_dim=8 --set train.batch_size=8 --set train.steps=8"
                             " --set eval.enabled=false --set checkpoint.dir=" + copy) == 0);
  BOOST_TEST((step_numbers("from_fixture_plain") == std::vector<int64_t>{7, 8}));
}

BOOST_AUTO_TEST_CASE(stop_signal_without_checkpoint_dir_writes_nothing) {
  // Run from an empty working directory: a stop must leave it empty (no
  // step_* folder), say there is nothing to resume from, and exit 1.
  const std::string cwd = scratch() + "/cwd_no_dir";
  fs::create_directories(cwd);
  Background job(2, "nodir", kMedium + kNoEval + " --set train.steps=1000", cwd);
  BOOST_TEST_REQUIRE(Background::wait_for([] { return steps_written("nodir") >= 3; }, 60));
  BOOST_TEST_REQUIRE(::kill(job.pid(), SIGUSR1) == 0);
  BOOST_TEST_REQUIRE(job.wait(60) == 1);
  const json m = manifest("nodir");
  BOOST_TEST_REQUIRE(m["status"] == "interrupted");
  BOOST_TEST(m["interrupted"]["by"] == "SIGUSR1");
  const std::string log = log_of("nodir");
  BOOST_TEST(contains(log, "no checkpoint.dir, nothing to resume from"), log);
  BOOST_TEST(!contains(log, "the same command resumes"), log);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(cwd)) left.push_back(e.path().filename().string());
  BOOST_TEST(left.empty(), "left in the working directory: " << (left.empty() ? "" : left[0]));
}

BOOST_AUTO_TEST_CASE(todays_vit_hpc_resumes_from_the_version_2_fixture_with_its_recipe_state) {
  const std::string copy = ck("fixture_v2");
  fs::copy(fs::path(VIT_SOURCE_DIR) / "tests/train/fixtures/checkpoint_v2/checkpoints", copy,
           fs::copy_options::recursive);
  // The fixture's run (its README), two more steps: the average and the
  // best state come from the checkpoint, nothing restarts.
  const std::string args =
      " --set model.patch_size=16 --set model.hidden=4 --set model.depth=1 --set model.heads=2 --set model.mlp_dim=8"
      " --set train.batch_size=8 --set train.steps=6 --set eval.test_at_end=false --set checkpoint.dir=" + copy + kRecipe;
  BOOST_TEST_REQUIRE(run_vit(2, "from_fixture_v2", args) == 0);
  const std::string log = log_of("from_fixture_v2");
  BOOST_TEST(contains(log, "weights: resumed from " + copy + "/step_000004 (step 4;"), log);
  BOOST_TEST(!contains(log, "starts afresh"), log);
  BOOST_TEST(!contains(log, "selection restarts"), log);
  BOOST_TEST((step_numbers("from_fixture_v2") == std::vector<int64_t>{5, 6}));
}
