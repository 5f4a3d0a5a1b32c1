// gemini's training-state checkpoints end to end on the CPU, through mpirun,
// on the Beans images (the prepare_beans_64 fixture):
//   - exact resume: N steps straight vs stop (checkpoint.stop_after_steps) +
//     resume, on 2 ranks with offload_optim_frac 0.5 and 0, and on 1 rank
//     with offload 1: the step lines and the exported weights bit for bit;
//     the model makes 3 chunks, so offload 0.5 keeps some chunks' state on
//     the host and some on the "device"; and with parameters offloaded too;
//     with the weight average (train.ema_decay): part ema in the checkpoint,
//     continued by the resumed run (the export writes the average);
//   - across plugins: a 2-rank torch_ddp checkpoint resumed by 2-rank gemini,
//     and a 2-rank gemini checkpoint resumed by 1-rank torch_ddp: the next
//     losses within the tolerance of a layout change (test_resume.cpp's
//     torch_ddp -> low_level_zero case).
// (hybrid_parallel's checkpoints: test_resume_hybrid.cpp.)
#define BOOST_TEST_MODULE resume_gemini
#include <boost/test/unit_test.hpp>

#include <map>

#include "resume_util.h"

using namespace e2e;

namespace {

// 16 x 16 patches (17 tokens), blocks of 132,480 parameters (0.5 MiB of
// fp32); with chunks of 1 MiB (262,144 elements) two blocks never share a
// chunk: [head, block 2], [block 1], [block 0, embeddings], 3 chunks.
const std::string kModel = " --set model.patch_size=16 --set model.hidden=128 --set model.mlp_dim=256 "
                           "--set model.depth=3 --set model.heads=4 ";
const std::string kGemini = " --set plugin.name=gemini --set plugin.chunk_size_mb=1 ";
// 12 steps of a global batch of 16 (2 x 8 or 1 x 16); checkpoints every 4.
const std::string kSteps = " --set train.steps=12 --set train.lr=2e-3 ";

std::string offload(const std::string& frac) { return " --set plugin.offload_optim_frac=" + frac + " "; }
std::string batch(int ranks) { return " --set train.batch_size=" + std::to_string(16 / ranks) + " "; }

// vit_hpc on the base spec with this file's model, length and gemini
// chunking plus `extra` (output appended to <name>.log).
int run_vit(int ranks, const std::string& name, const std::string& extra) {
  return run_appending(ranks, name, kModel + kNoEval + kSteps + extra);
}

// Steps 7 to 12 of `run` (a resume at step 6 under another plugin or
// layout) against those of the uninterrupted `ref`. Only the order of the
// fp32 sums changes (per-rank partial sums, per-chunk or per-bucket
// reductions), as in test_resume.cpp's torch_ddp -> low_level_zero case and
// test_e2e's gemini vs torch_ddp case (both within 1e-5 relative): the same
// bound, 1e-5 relative, for losses and grad norms.
void next_steps_close(const std::string& run, const std::string& ref_run) {
  BOOST_TEST_REQUIRE(lines_of(ref_run, "step").size() == 12u, ref_run);
  steps_follow(run, ref_run, 7, 1e-5);
}

// Uninterrupted 2-rank gemini at offload 0.5 (tests 1 and 3 share it).
const std::string kGeminiHalf = kGemini + offload("0.5") + batch(2);
void gemini_half_straight() {
  static bool done = false;
  if (done) return;
  BOOST_TEST_REQUIRE(run_vit(2, "g2_half_straight", kGeminiHalf + " --set checkpoint.export_hf=" +
                                                       export_dir("g2_half_straight")) == 0);
  BOOST_TEST_REQUIRE(contains(log_of("g2_half_straight"), "gemini: 3 chunks of whole blocks"),
                     log_of("g2_half_straight"));
  done = true;
}

// Straight vs stop at step 6 + resume, bit for bit.
void exact_resume(int ranks, const std::string& frac, const std::string& tag) {
  const std::string args = kGemini + offload(frac) + batch(ranks);
  const std::string straight = tag + "_straight";
  if (tag == "g2_half") {
    gemini_half_straight();
  } else {
    BOOST_TEST_REQUIRE(run_vit(ranks, straight, args + " --set checkpoint.export_hf=" + export_dir(straight)) == 0);
  }
  const std::string resumable = args + " --set checkpoint.dir=" + ck(tag) + " --set checkpoint.every_steps=4" +
                                " --set checkpoint.export_hf=" + export_dir(tag);
  BOOST_TEST_REQUIRE(run_vit(ranks, tag, resumable + " --set checkpoint.stop_after_steps=6") == 75);
  BOOST_TEST(manifest(tag)["status"] == "interrupted");
  BOOST_TEST(slurp(ck(tag) + "/latest") == "step_000006\n");
  const json index = json::parse(slurp(ck(tag) + "/step_000006/index.json"));
  const bool ema = frac.find("train.ema_decay") != std::string::npos;
  BOOST_TEST(index["parts"] == (ema ? json({"master", "adam_m", "adam_v", "ema"}) : json({"master", "adam_m", "adam_v"})));
  BOOST_TEST(fs::exists(ck(tag) + "/step_000006/rank_0000" + std::to_string(ranks - 1) + ".safetensors"));
  BOOST_TEST_REQUIRE(run_vit(ranks, tag, resumable) == 0);
  BOOST_TEST_CONTEXT(tag) {
    BOOST_TEST(manifest(tag)["status"] == "completed");
    BOOST_TEST(manifest(tag)["resumes"][0]["from_step"] == 6);
    BOOST_TEST(step_numbers(tag) == one_to(12));
    same_steps(tag, straight, 1, 12);
    BOOST_TEST(exported(tag) == exported(straight));  // the final weights, bit for bit
    // The last step (a multiple of checkpoint.every_steps) is saved once.
    const std::string log = log_of(tag), last = "/step_000012: ";
    size_t saves = 0;
    for (size_t at = log.find(last); at != std::string::npos; at = log.find(last, at + 1)) ++saves;
    BOOST_TEST(saves == 1u, log);
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(exact_resume_two_ranks_half_offloaded) { exact_resume(2, "0.5", "g2_half"); }

BOOST_AUTO_TEST_CASE(exact_resume_one_rank_all_offloaded_and_two_ranks_none_offloaded) {
  exact_resume(1, "1", "g1_all");
  exact_resume(2, "0", "g2_none");
}

BOOST_AUTO_TEST_CASE(exact_resume_with_parameters_offloaded_too) {
  // offload_param_frac 0.5 of offload_optim_frac 1: the two chunks whose
  // parameters stay on the host (0.532 of them) are gathered from their
  // master weights in place; the third from a separate compute copy
  // (st.lowp, as every offloaded chunk without parameter offload), which the
  // import rebuilds from the imported master weights.
  exact_resume(2, "1 --set plugin.offload_param_frac=0.5", "g2_param");
  BOOST_TEST(contains(log_of("g2_param"), "parameters of 2 chunk(s)"), log_of("g2_param"));
}

BOOST_AUTO_TEST_CASE(exact_resume_with_the_weight_average) {
  // The average of device parts (StepFinisher) and of offloaded ones (the
  // CPU task after each chunk's AdamW) goes into part ema and comes back:
  // the exported average of the resumed run equals the straight run's, bit
  // for bit. With parameter groups too, so the device parts are split views.
  const std::string ema = " --set train.ema_decay=0.9 --set train.layer_decay=0.8 --set train.no_decay_bias_norm=true";
  exact_resume(2, "0.5" + ema, "g2_half_ema");
  exact_resume(1, "1 --set plugin.offload_param_frac=0.5" + ema, "g1_all_ema");
}

BOOST_AUTO_TEST_CASE(torch_ddp_checkpoint_resumes_into_gemini_and_gemini_into_torch_ddp) {
  // torch_ddp, 2 ranks: straight, and stopped at step 6.
  BOOST_TEST_REQUIRE(run_vit(2, "d2_straight", batch(2)) == 0);
  BOOST_TEST_REQUIRE(run_vit(2, "d2_cut", batch(2) + " --set checkpoint.dir=" + ck("d2") +
                                              " --set checkpoint.stop_after_steps=6") == 75);
  same_steps("d2_cut", "d2_straight", 1, 6);
  // ... resumed by gemini on 2 ranks, half of the optimizer state offloaded.
  fs::copy(ck("d2"), ck("d2_to_gemini"), fs::copy_options::recursive);
  BOOST_TEST_REQUIRE(run_vit(2, "d2_to_gemini", kGeminiHalf + " --set checkpoint.dir=" + ck("d2_to_gemini")) == 0);
  const std::string glog = log_of("d2_to_gemini");
  BOOST_TEST(contains(glog, "the plugin changes from torch_ddp to gemini offload 0.5"), glog);
  // A gemini rank reads only its part of every chunk: half of the state on
  // 2 ranks (the shard files hold headers besides: within 10%).
  uint64_t shard_bytes = 0;
  for (const auto& e : fs::directory_iterator(ck("d2") + "/step_000006")) {
    if (e.path().extension() == ".safetensors") shard_bytes += fs::file_size(e.path());
  }
  const size_t at = glog.find("this rank read ");
  BOOST_TEST_REQUIRE(at != std::string::npos);
  const double read = std::stod(glog.substr(at + 15));
  BOOST_TEST(read > 0.40 * shard_bytes);
  BOOST_TEST(read < 0.55 * shard_bytes);
  next_steps_close("d2_to_gemini", "d2_straight");

  // gemini, 2 ranks, stopped at step 6, resumed by torch_ddp on 1 rank.
  gemini_half_straight();
  BOOST_TEST_REQUIRE(run_vit(2, "g2_cut", kGeminiHalf + " --set checkpoint.dir=" + ck("g2_cut") +
                                              " --set checkpoint.stop_after_steps=6") == 75);
  same_steps("g2_cut", "g2_half_straight", 1, 6);
  fs::copy(ck("g2_cut"), ck("g2_to_ddp"), fs::copy_options::recursive);
  BOOST_TEST_REQUIRE(run_vit(1, "g2_to_ddp", batch(1) + " --set checkpoint.dir=" + ck("g2_to_ddp")) == 0);
  const std::string dlog = log_of("g2_to_ddp");
  BOOST_TEST(contains(dlog, "the plugin changes from gemini offload 0.5 to torch_ddp"), dlog);
  BOOST_TEST(contains(dlog, "the layout changes from 2 ranks (dp 2) to 1 rank (dp 1)"), dlog);
  next_steps_close("g2_to_ddp", "g2_half_straight");
}
