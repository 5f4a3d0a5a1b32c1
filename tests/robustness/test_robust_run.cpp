// Issue 9, findings 1, 3, 4 and 8 as a user meets them: vit_hpc under
// `mpirun -np 2` on a spec with one thing wrong. Each refusal is printed once
// (not once per rank), every rank exits 2, no internal check message and no
// Open MPI abort reaches the user, nothing is written, and `--check` refuses
// exactly what the run refuses (one validation path). The data, the spec and
// the damage are made here.
#define BOOST_TEST_MODULE robust_run
#include <boost/test/unit_test.hpp>

#include <hdf5.h>

#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/device.h"
#include "io/spec.h"
#include "parallel/plugin.h"
#include "robust_util.h"

using namespace robust;

namespace {

// One set of inputs for the whole suite: 4 synthetic images per class and
// split (12 per split), packed at 16 px, and the tiny spec.
struct Inputs {
  TempDir dir{"run"};
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

// vit_hpc <spec> <args> on 2 ranks.
Result vit_hpc(const std::string& args) { return each_rank(2, kVitHpc + " " + inputs().spec + " " + args); }

bool gpu_visible() { return vit::cuda_device_count() > 0; }

// The run and its --check refuse alike: exit 2 on both ranks, `message` (a
// whole line) printed once, nothing written under results/.
void expect_refused_by_check_and_run(const std::string& sets, const std::string& message, const std::string& name) {
  for (const bool check : {true, false}) {
    BOOST_TEST_CONTEXT((check ? "--check " : "run ") << sets) {
      const Result r = vit_hpc(sets + " --set run.name=" + name + (check ? " --check" : ""));
      BOOST_TEST(every_rank_exited(r, 2, 2), r.output);
      BOOST_TEST(count(r.output, message) == 1u, r.output);
      expect_clean_refusal(r);
      BOOST_TEST(!fs::exists(fs::path(inputs().results) / name));
    }
  }
}

}  // namespace

// Finding 3: `--check` said "valid" to all of these, then the run refused
// (or crashed: bf16 on the CPU was "src/model/vit.cpp:30: check failed").
BOOST_AUTO_TEST_CASE(check_refuses_what_the_run_refuses) {
  const std::string missing = inputs().dir.str("missing.h5");
  // A plugin the spec names but this build does not have (while there is one).
  const auto built = vit::parallel::available_plugins();
  std::string list, unbuilt;
  for (const auto& p : built) list += (list.empty() ? "" : ", ") + p;
  for (const auto& p : vit::find_field("plugin.name")->choices) {
    if (unbuilt.empty() && std::find(built.begin(), built.end(), p) == built.end()) unbuilt = p;
  }
  if (unbuilt.empty()) {
    BOOST_TEST_MESSAGE("every plugin the spec names is built: the unbuilt-plugin case does not apply");
  } else {
    expect_refused_by_check_and_run("--set plugin.name=" + unbuilt,
                                    "error: --set plugin.name=" + unbuilt + ": plugin.name: '" + unbuilt +
                                        "' is not implemented yet (available: " + list + ")\n",
                                    "unbuilt");
  }
  // checkpoint.dir with resume true and no checkpoint there: refused by both.
  expect_refused_by_check_and_run("--set checkpoint.dir=ckpt_none --set checkpoint.resume=true",
                                  "checkpoint.resume: true, but ckpt_none holds no complete checkpoint to resume from",
                                  "ckpt_none");
  expect_refused_by_check_and_run("--set data.path=" + missing,
                                  "error: --set data.path=" + missing + ": data.path: " + missing +
                                      ": no such file (make it with vit_data_prep --input <images> --output " +
                                      missing + " --image-size 16)\n",
                                  "missing");
  if (gpu_visible()) {
    BOOST_TEST_MESSAGE("a GPU is visible: the bf16-on-CPU and cuda-without-GPU cases do not apply here");
    return;
  }
  expect_refused_by_check_and_run(
      "--set run.device=auto --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16",
      "error: --set plugin.precision=bf16: plugin.precision: bf16 needs a GPU, but this run computes on the CPU "
      "(run.device auto and no GPU visible on every rank) (allowed on the CPU: fp32, with plugin.name torch_ddp)\n",
      "bf16");
  const std::string why = vit::built_with_cuda() ? "" : " (this vit_hpc was built without CUDA)";
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  expect_refused_by_check_and_run("--set run.device=cuda",
                                  "error: --set run.device=cuda: run.device: cuda, but rank 0 on host " +
                                      std::string(host) + " sees no GPU" + why + " (allowed here: cpu, or auto)\n",
                                  "cuda");
}

// Finding 3: a folder given as the spec read as an empty file (every default)
// and ran; a tab in the indentation was "illegal map value".
BOOST_AUTO_TEST_CASE(a_folder_as_spec_and_a_tab_in_the_spec_are_named) {
  const std::string folder = inputs().dir.str();
  const Result dir = each_rank(2, kVitHpc + " " + folder + " --check");
  BOOST_TEST(every_rank_exited(dir, 2, 2), dir.output);
  BOOST_TEST(count(dir.output, folder + ": is a folder, not a spec file (give the YAML file, e.g. "
                                        "configs/quickstart.yaml)\n") == 1u,
             dir.output);

  const fs::path tabbed = inputs().dir.path() / "tabbed.yaml";
  write_text(tabbed, "run:\n  name: tabbed\ntrain:\n\tepochs: 2\n");
  const Result tab = each_rank(2, kVitHpc + " " + tabbed.string() + " --check");
  BOOST_TEST(every_rank_exited(tab, 2, 2), tab.output);
  BOOST_TEST(count(tab.output, tabbed.string() + ":4:1: a tab in the indentation (YAML indents with spaces only: "
                                                 "replace the tab with spaces)\n") == 1u,
             tab.output);
}

// plugin.gemm_tuning_cache: a damaged file is refused with its line and what
// to do, by --check and the run alike, and left as it was; a file in a folder
// that does not exist is refused before anything runs.
BOOST_AUTO_TEST_CASE(a_damaged_gemm_tuning_cache_is_refused_and_left_as_it_was) {
  const fs::path damaged = inputs().dir.path() / "tuning.tsv";
  const std::string text = "# vit_hpc gemm tuning cache v1\nNVIDIA_H200/sm90/132\tcublasLt-1\t1,2,3\t1\tzz\t0\n";
  write_text(damaged, text);
  expect_refused_by_check_and_run(
      "--set plugin.gemm_tuning_cache=" + damaged.string(),
      "error: --set plugin.gemm_tuning_cache=" + damaged.string() + ": plugin.gemm_tuning_cache: " +
          damaged.string() + ": line 2: the algorithm has 2 hex digits where 128 belong. " + damaged.string() +
          " is a cache of GEMM tuning results that vit_hpc writes (plugin.gemm_tuning_cache); delete it (the next "
          "run tunes again and writes a new one) or point plugin.gemm_tuning_cache elsewhere\n",
      "damaged_cache");
  std::ifstream in(damaged);
  std::stringstream now;
  now << in.rdbuf();
  BOOST_TEST(now.str() == text);
  const std::string nowhere = inputs().dir.str("no_such_folder/tuning.tsv");
  expect_refused_by_check_and_run("--set plugin.gemm_tuning_cache=" + nowhere,
                                  "plugin.gemm_tuning_cache: " + nowhere + ": the folder " +
                                      inputs().dir.str("no_such_folder") +
                                      " does not exist (create it, or name a file in a folder that exists; empty = "
                                      "no cache)\n",
                                  "nowhere_cache");
}

// Finding 4: a global batch larger than the training split was printed by
// every rank, then Open MPI's abort noise (ORTE_ERROR_LOG, exit 1).
BOOST_AUTO_TEST_CASE(a_batch_larger_than_the_split_is_refused_once_on_every_rank) {
  expect_refused_by_check_and_run(
      "--set train.batch_size=8",
      "error: --set train.batch_size=8: train.batch_size: 8 x train.grad_accum 1 x 2 data-parallel ranks = a global "
      "batch of 16 images, but split 'train' of " + inputs().data +
          " holds 12 and data.drop_last drops an incomplete batch, so no step would run (allowed: a global batch of "
          "at most 12; lower train.batch_size or set data.drop_last: false)\n",
      "big_batch");
}

// Finding 4: `vit_hpc predict` on a config.json whose heads do not divide its
// width ended in "src/model/params.cpp:12: check failed"; bf16 on the CPU in
// "src/model/vit.cpp:30: check failed".
BOOST_AUTO_TEST_CASE(predict_refuses_a_bad_config_and_cpu_half_precision_in_words) {
  const std::string model = inputs().dir.str("model_heads");
  const Result trained = each_rank(2, kVitHpc + " " + inputs().spec +
                                          " --set run.name=for_predict --set checkpoint.export_hf=" + model);
  BOOST_TEST_REQUIRE(every_rank_exited(trained, 2, 0), trained.output);
  const std::string predict = kVitHpc + " predict --model " + model + " --data " + inputs().data +
                              " --device cpu --output " + inputs().dir.str("p.csv");
  if (!gpu_visible()) {
    const Result bf16 = shell(predict + " --precision bf16");
    BOOST_TEST(bf16.status == 2, bf16.output);
    BOOST_TEST(bf16.output == "vit_hpc predict: --precision bf16 needs a GPU, but this prediction runs on the CPU "
                              "(allowed on the CPU: fp32)\n");
  }
  nlohmann::json config = nlohmann::json::parse(read_text(model + "/config.json"));
  config["num_attention_heads"] = 3;
  write_text(model + "/config.json", config.dump(2));
  const Result heads = shell(predict);
  BOOST_TEST(heads.status == 2, heads.output);
  BOOST_TEST(heads.output == "vit_hpc predict: " + model + "/config.json: num_attention_heads 3 does not divide "
                             "hidden_size 8 (allowed: a divisor of hidden_size, so that every head has the same "
                             "size)\n");
  expect_clean_refusal(heads);
}

// Finding 1: 4 KB of changed pixels in a training image trained silently.
// Now the run stops on every rank before training, naming the image; the
// two ranks of the node share the reading. data.verify_checksum: false
// trains on the file anyway (for files too large to read twice).
BOOST_AUTO_TEST_CASE(a_damaged_data_file_stops_every_rank_before_training) {
  const std::string damaged = inputs().dir.str("damaged.h5");
  fs::copy_file(inputs().data, damaged, fs::copy_options::overwrite_existing);
  {
    const hid_t f = H5Fopen(damaged.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    const hid_t d = H5Dopen2(f, "train/images", H5P_DEFAULT);
    const hsize_t offset[4] = {5, 0, 0, 0};  // train image 5: bean_rust/img_1.jpg
    unsigned mask = 0;
    haddr_t address = 0;
    hsize_t size = 0;
    BOOST_REQUIRE(H5Dget_chunk_info_by_coord(d, offset, &mask, &address, &size) >= 0);
    H5Dclose(d);
    H5Fclose(f);
    std::fstream io(damaged, std::ios::binary | std::ios::in | std::ios::out);
    io.seekp(static_cast<std::streamoff>(address));
    const std::string noise(static_cast<size_t>(size), '\x7f');
    io.write(noise.data(), static_cast<std::streamsize>(noise.size()));
  }
  const Result r = vit_hpc("--set data.path=" + damaged + " --set run.name=damaged");
  BOOST_TEST(every_rank_exited(r, 2, 2), r.output);
  BOOST_TEST(count(r.output, "data.path: " + damaged + ": damaged: image 5 of split 'train' "
                                                       "(train/bean_rust/img_1.jpg) does not match the checksum "
                                                       "vit_data_prep recorded (pixels or label changed since); "
                                                       "re-create the file with vit_data_prep "
                                                       "(data.verify_checksum: false skips this check)\n") == 1u,
             r.output);
  expect_clean_refusal(r);
  BOOST_TEST(!fs::exists(fs::path(inputs().results) / "damaged"));

  const Result anyway = vit_hpc("--set data.path=" + damaged + " --set run.name=damaged_anyway "
                                "--set data.verify_checksum=false");
  BOOST_TEST(every_rank_exited(anyway, 2, 0), anyway.output);
}

// Finding 8: data.path naming a folder of images said "no such file (make it
// with vit_data_prep ... --output <the folder>)".
BOOST_AUTO_TEST_CASE(a_folder_of_images_as_data_path_gets_the_command_that_packs_it) {
  const std::string img = inputs().images;
  expect_refused_by_check_and_run("--set data.path=" + img,
                                  "error: --set data.path=" + img + ": data.path: " + img +
                                      ": is a folder of images, not an HDF5 file: pack it once with `vit_data_prep "
                                      "--input " + img + " --output data/img_16.h5 --image-size 16` and use the .h5 "
                                      "file it writes\n",
                                  "folder");
}

// Finding 8: train.steps beyond what train.epochs allows silently ran more
// epochs. The schema says steps win; the run says so at start, once.
BOOST_AUTO_TEST_CASE(steps_beyond_epochs_win_and_are_announced) {
  // train.epochs is on line 18 of the tiny spec (robust_util.h).
  const std::string note = "train.steps 7 wins over train.epochs 1 (" + inputs().spec +
                           ":18): with 3 steps of 4 images per epoch, the run takes 3 epochs, more than "
                           "train.epochs 1 (3 steps); set train.steps: 0 to train by epochs\n";
  const Result check = vit_hpc("--set train.steps=7 --check");
  BOOST_TEST(every_rank_exited(check, 2, 0), check.output);
  BOOST_TEST(count(check.output, "# note: " + note) == 1u, check.output);

  const Result run = vit_hpc("--set train.steps=7 --set run.name=steps");
  BOOST_TEST(every_rank_exited(run, 2, 0), run.output);
  BOOST_TEST(count(run.output, "vit_hpc: note: " + note) == 1u, run.output);
  std::ifstream lines(fs::path(inputs().results) / "steps" / "rank_0.jsonl");
  int steps = 0;
  for (std::string line; std::getline(lines, line);) steps += nlohmann::json::parse(line)["type"] == "step";
  BOOST_TEST(steps == 7);

  const Result schema = shell(kVitHpc + " --print-spec");
  BOOST_TEST(contains(schema.output, "0 = run by epochs; > 0 wins over train.epochs"), schema.output);
}
