// Issue 9, findings 6 and 7 as a user meets them: where results and the
// trained model go. An export destination is checked before training and an
// earlier export is never replaced unasked; a run folder belongs to one run;
// vit_results reports every readable run when one is damaged, and reads a
// run of zero epochs that vit_hpc wrote; predict says "vit_hpc predict:"
// once. Runs through `mpirun -np 2` on synthetic data made here.
#define BOOST_TEST_MODULE robust_results
#include <boost/test/unit_test.hpp>

#include <nlohmann/json.hpp>

#include "robust_util.h"

using namespace robust;

namespace {

struct Inputs {
  TempDir dir{"results"};
  std::string images = dir.str("img");
  std::string data = dir.str("data.h5");
  std::string results = dir.str("results");
  std::string spec;
  Inputs() {
    make_image_tree(images, 4);
    prep(images, data);
    spec = write_tiny_spec(dir.path(), data, results);
  }
};
Inputs& inputs() {
  static Inputs in;
  return in;
}

Result vit_hpc(const std::string& args) { return each_rank(2, kVitHpc + " " + inputs().spec + " " + args); }

fs::path run_dir(const std::string& name) { return fs::path(inputs().results) / name; }

}  // namespace

// Finding 6: a second export to the same folder overwrote the first
// silently. Now it is refused before training (by --check too), and the
// first export stays byte for byte; checkpoint.overwrite_export: true asks
// for the replacement.
BOOST_AUTO_TEST_CASE(an_earlier_export_is_kept_unless_its_replacement_is_asked_for) {
  const std::string model = inputs().dir.str("exported");
  const Result first = vit_hpc("--set run.name=export_a --set checkpoint.export_hf=" + model);
  BOOST_TEST_REQUIRE(every_rank_exited(first, 2, 0), first.output);
  const std::string weights = read_text(model + "/model.safetensors");
  BOOST_TEST_REQUIRE(!weights.empty());

  const std::string refusal = "error: --set checkpoint.export_hf=" + model + ": checkpoint.export_hf: " + model +
                              ": already holds an export (model.safetensors, config.json); set "
                              "checkpoint.overwrite_export: true to replace it, or choose another folder\n";
  for (const std::string extra : {" --check", ""}) {
    const Result again = vit_hpc("--set run.name=export_b --set checkpoint.export_hf=" + model + extra);
    BOOST_TEST(every_rank_exited(again, 2, 2), again.output);
    BOOST_TEST(count(again.output, refusal) == 1u, again.output);
    expect_clean_refusal(again);
  }
  BOOST_TEST(!fs::exists(run_dir("export_b")));  // refused before training: no run folder
  BOOST_TEST(read_text(model + "/model.safetensors") == weights);

  const Result replace = vit_hpc("--set run.name=export_c --set run.seed=7 --set checkpoint.overwrite_export=true "
                                 "--set checkpoint.export_hf=" + model);
  BOOST_TEST(every_rank_exited(replace, 2, 0), replace.output);
  BOOST_TEST(read_text(model + "/model.safetensors") != weights);  // another seed: other weights
}

// Finding 6: a destination that cannot be written (a file, a missing parent)
// was found only after training, and the trained weights were lost with it.
BOOST_AUTO_TEST_CASE(an_unusable_export_destination_is_refused_before_training) {
  const std::string file = inputs().dir.str("a_file");
  write_text(file, "not a folder\n");
  const Result is_file = vit_hpc("--set run.name=to_file --set checkpoint.export_hf=" + file);
  BOOST_TEST(every_rank_exited(is_file, 2, 2), is_file.output);
  BOOST_TEST(count(is_file.output, "error: --set checkpoint.export_hf=" + file + ": checkpoint.export_hf: " + file +
                                       ": is a file, not a folder (the export writes model.safetensors and "
                                       "config.json into a folder: name a folder)\n") == 1u,
             is_file.output);
  BOOST_TEST(!fs::exists(run_dir("to_file")));

  const std::string orphan = inputs().dir.str("no/such/parent/model");
  const Result no_parent = vit_hpc("--set run.name=no_parent --set checkpoint.export_hf=" + orphan);
  BOOST_TEST(every_rank_exited(no_parent, 2, 2), no_parent.output);
  BOOST_TEST(count(no_parent.output, "checkpoint.export_hf: " + orphan + ": its parent folder " +
                                         inputs().dir.str("no/such/parent") +
                                         " does not exist (create it first, or choose another folder)\n") == 1u,
             no_parent.output);
  BOOST_TEST(!fs::exists(run_dir("no_parent")));
  expect_clean_refusal(no_parent);
}

// Finding 7: the run folder was "claimed" by checking for a manifest, so a
// folder another run had just created (no manifest yet) was shared and its
// rank_0.jsonl corrupted. Now the folder is created exclusively: one that
// exists belongs to someone else.
BOOST_AUTO_TEST_CASE(a_run_folder_that_exists_is_not_shared) {
  fs::create_directories(run_dir("claimed"));  // another run got here first
  const Result r = vit_hpc("--set run.name=claimed");
  BOOST_TEST(every_rank_exited(r, 2, 2), r.output);
  BOOST_TEST(count(r.output, "run.name: " + run_dir("claimed").string() +
                                 " already exists (an earlier run, or one running now, named 'claimed'); choose "
                                 "another run.name (--set run.name=...) or move that folder\n") == 1u,
             r.output);
  BOOST_TEST(fs::is_empty(run_dir("claimed")));
}

// Finding 7: two runs started at the same moment with one name: exactly one
// runs, the other stops with status 2, and the folder holds one run's
// metrics, every line whole.
BOOST_AUTO_TEST_CASE(two_runs_started_together_with_one_name_do_not_mix) {
  const std::string one = mpirun(1) + kVitHpc + " " + inputs().spec + " --set run.name=race --set train.epochs=3";
  const Result r = shell("(" + one + "; echo first status $?) & (" + one + "; echo second status $?) & wait");
  const size_t ok = count(r.output, " status 0\n"), refused = count(r.output, " status 2\n");
  BOOST_TEST(ok == 1u, r.output);
  BOOST_TEST(refused == 1u, r.output);
  BOOST_TEST(contains(r.output, "already exists"), r.output);
  std::ifstream in(run_dir("race") / "rank_0.jsonl");
  int steps = 0;
  for (std::string line; std::getline(in, line);) steps += nlohmann::json::parse(line)["type"] == "step";
  BOOST_TEST(steps == 18);  // 3 epochs of 12 images in batches of 2: one run's worth
}

// Finding 7: one run folder without a manifest (its disk was full at start)
// or with a damaged one stopped the whole vit_results report. Now each costs
// one warning naming the file, the rest is reported; --strict refuses.
BOOST_AUTO_TEST_CASE(vit_results_reports_the_readable_runs_beside_damaged_ones) {
  const fs::path all = inputs().dir.path() / "report";
  fs::create_directories(all);
  const Result good = each_rank(2, kVitHpc + " " + inputs().spec + " --set run.output_dir=" + all.string() +
                                       " --set run.name=good");
  BOOST_TEST_REQUIRE(every_rank_exited(good, 2, 0), good.output);
  fs::create_directories(all / "no_manifest");
  fs::copy_file(all / "good" / "rank_0.jsonl", all / "no_manifest" / "rank_0.jsonl");
  fs::create_directories(all / "start_full");  // the manifest's temporary, the rename never happened
  write_text(all / "start_full" / "manifest.json.tmp.4242", "{\"format\": 1, \"ru");
  fs::create_directories(all / "cut_manifest");
  const std::string manifest = read_text(all / "good" / "manifest.json");
  write_text(all / "cut_manifest" / "manifest.json", manifest.substr(0, manifest.size() / 2));
  fs::copy_file(all / "good" / "rank_0.jsonl", all / "cut_manifest" / "rank_0.jsonl");

  const Result lenient = shell(kVitResults + " " + all.string());
  BOOST_TEST(lenient.status == 0, lenient.output);
  BOOST_TEST(contains(lenient.output, "### good\n"), lenient.output);
  BOOST_TEST(contains(lenient.output, "1 training run"), lenient.output);
  BOOST_TEST(count(lenient.output, "vit_results: warning: ") == 3u, lenient.output);
  for (const fs::path& missing : {all / "no_manifest" / "manifest.json", all / "start_full" / "manifest.json"}) {
    BOOST_TEST(count(lenient.output, "vit_results: warning: " + missing.string() +
                                         ": missing (the folder holds rank files or a manifest's temporary, so it is "
                                         "a run folder without its manifest): skipped (vit_results --strict makes "
                                         "this an error)\n") == 1u,
               lenient.output);
  }
  BOOST_TEST(count(lenient.output, "vit_results: warning: " + (all / "cut_manifest" / "manifest.json").string() +
                                       ":") == 1u,
             lenient.output);

  const Result strict = shell(kVitResults + " --strict " + all.string());
  BOOST_TEST(strict.status == 1, strict.output);
  BOOST_TEST(!contains(strict.output, "### good"), strict.output);
  BOOST_TEST(contains(strict.output, "vit_results: error: "), strict.output);
}

// Finding 7: a run with train.epochs 0 (evaluation only) that vit_hpc wrote
// was refused by vit_results ("no epoch line").
BOOST_AUTO_TEST_CASE(vit_results_reads_a_run_of_zero_epochs) {
  const Result run = vit_hpc("--set run.name=zero_epochs --set train.epochs=0");
  BOOST_TEST_REQUIRE(every_rank_exited(run, 2, 0), run.output);
  const Result report = shell(kVitResults + " " + run_dir("zero_epochs").string());
  BOOST_TEST(report.status == 0, report.output);
  BOOST_TEST(contains(report.output, "### zero_epochs\n"), report.output);
  BOOST_TEST(contains(report.output, "No training epochs (train.epochs 0): evaluation only.\n"), report.output);
  BOOST_TEST(contains(report.output, "Final test accuracy: "), report.output);
}

// Finding 7: "vit_hpc predict: vit_hpc predict: --model is required".
BOOST_AUTO_TEST_CASE(predict_messages_carry_their_prefix_once) {
  const Result r = shell(kVitHpc + " predict --data " + inputs().data);
  BOOST_TEST(r.status == 2);
  BOOST_TEST(r.output == "vit_hpc predict: --model is required (a folder with model.safetensors + config.json)\n");
  const Result both = shell(kVitHpc + " predict --model x --data a.h5 --images b");
  BOOST_TEST(both.output == "vit_hpc predict: give exactly one of --data FILE.h5 or --images FOLDER\n");
  // A --model that does not exist is named as such (it was read as a file
  // beside a config.json in its parent folder: "/tmp/config.json: cannot open").
  const std::string missing = (fs::temp_directory_path() / "vit_no_such_model").string();
  const Result gone = shell(kVitHpc + " predict --model " + missing + " --data " + inputs().data);
  BOOST_TEST(gone.status == 2);
  BOOST_TEST(gone.output == "vit_hpc predict: " + missing + ": no such folder or file (give a Hugging Face checkpoint "
                            "folder holding model.safetensors and config.json, or its model.safetensors)\n");
}
