// vit_hpc end to end on the GPU, through mpirun (skipped without a GPU):
// torch_ddp and torch_ddp_fp16 on 1 and on 2 ranks with the same global
// batch give the same losses (on a one-GPU machine the 2 ranks share the
// GPU and talk through MPI), and an fp16 run whose loss scale overflows the
// gradients skips those steps and lowers the scale.
#define BOOST_TEST_MODULE e2e_gpu
#include <boost/test/unit_test.hpp>

#include "common/gpu_main.h"

#include <cmath>
#include <iterator>
#include "e2e_util.h"

using namespace e2e;

namespace {
const std::string kGpu = "--set run.device=cuda --set eval.enabled=false --set train.steps=6 ";
}

BOOST_AUTO_TEST_CASE(torch_ddp_fp32_one_and_two_ranks_agree) {
  // TF32 off: what differs is only the fp32 summation order of the
  // gradients (per-rank batches, then the all-reduce); 1e-4 relative as on the CPU.
  const std::string a = kGpu + "--set plugin.tf32=false ";
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_fp32_np1", a + "--set train.batch_size=16") == 0);
  BOOST_TEST_REQUIRE(vit_hpc(2, "gpu_fp32_np2", a + "--set train.batch_size=8") == 0);
  const auto l1 = step_losses("gpu_fp32_np1"), l2 = step_losses("gpu_fp32_np2");
  BOOST_TEST_REQUIRE(l1.size() == 6u);
  for (size_t i = 0; i < l1.size(); ++i) BOOST_TEST(l2[i] == l1[i], boost::test_tools::tolerance(1e-4));
}

BOOST_AUTO_TEST_CASE(torch_ddp_fp16_bf16_one_and_two_ranks_agree) {
  // bf16 activations (8-bit mantissa, ~4e-3 relative per rounding) computed
  // on batches of 16 vs 8 round differently; over 6 steps the losses stay
  // within 2e-2 relative, while a wrong slice or gradient scale moves them
  // by far more (the first step's loss is checked tighter: same weights).
  const std::string b = kGpu + "--set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 ";
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_bf16_np1", b + "--set train.batch_size=16") == 0);
  BOOST_TEST_REQUIRE(vit_hpc(2, "gpu_bf16_np2", b + "--set train.batch_size=8") == 0);
  const auto l1 = step_losses("gpu_bf16_np1"), l2 = step_losses("gpu_bf16_np2");
  BOOST_TEST_REQUIRE(l1.size() == 6u);
  BOOST_TEST(l2[0] == l1[0], boost::test_tools::tolerance(5e-3));
  for (size_t i = 0; i < l1.size(); ++i) BOOST_TEST(l2[i] == l1[i], boost::test_tools::tolerance(2e-2));
}

BOOST_AUTO_TEST_CASE(torch_ddp_fp16_one_and_two_ranks_agree) {
  const std::string f = kGpu + "--set plugin.name=torch_ddp_fp16 --set plugin.precision=fp16 ";
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_fp16_np1", f + "--set train.batch_size=16") == 0);
  BOOST_TEST_REQUIRE(vit_hpc(2, "gpu_fp16_np2", f + "--set train.batch_size=8") == 0);
  const auto l1 = step_losses("gpu_fp16_np1"), l2 = step_losses("gpu_fp16_np2");
  BOOST_TEST_REQUIRE(l1.size() == 6u);
  // fp16 keeps 11 bits: tighter than bf16.
  for (size_t i = 0; i < l1.size(); ++i) BOOST_TEST(l2[i] == l1[i], boost::test_tools::tolerance(5e-3));
}

BOOST_AUTO_TEST_CASE(fp16_overflow_is_skipped_and_the_scale_lowered) {
  // A loss scale of 1e30 overflows fp16 gradients (max 65504) at once; with
  // hysteresis 1 and backoff 1e-10 the scale goes 1e30 -> 1e20 -> 1e10 -> 1,
  // skipping each overflowing step, and training then proceeds.
  const std::string f = kGpu +
                        "--set plugin.name=torch_ddp_fp16 --set plugin.precision=fp16 --set plugin.initial_scale=1e30 "
                        "--set plugin.max_scale=1e38 --set plugin.hysteresis=1 --set plugin.backoff_factor=1e-10 "
                        "--set train.batch_size=8";
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_overflow", f) == 0);
  const auto steps = of_type(read_jsonl(scratch() + "/gpu_overflow/rank_0.jsonl"), "step");
  BOOST_TEST_REQUIRE(steps.size() == 6u);
  BOOST_TEST(steps[0]["skipped"] == true);
  BOOST_TEST(steps[0]["loss_scale"].get<double>() == 1e30, boost::test_tools::tolerance(1e-6));
  BOOST_TEST(steps[1]["loss_scale"].get<double>() == 1e20, boost::test_tools::tolerance(1e-6));
  BOOST_TEST(steps[1]["skipped"] == true);
  int applied = 0;
  for (const auto& s : steps) applied += s["skipped"] == false;
  BOOST_TEST(applied >= 2);  // once the scale fits, steps go through
  BOOST_TEST(steps.back()["loss_scale"].get<double>() < 1e10);
}

BOOST_AUTO_TEST_CASE(bf16_head_size_12_trains_on_the_padded_attention_path) {
  // hidden 36 over 3 heads: head size 12 (24 bytes in bf16) has no cuDNN
  // engine and no 16-byte rows; the run falls back to the padded cuBLAS form,
  // says so once (rank 0), and trains with finite losses.
  const std::string b = kGpu +
                        "--set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set model.hidden=36 "
                        "--set model.heads=3 --set model.mlp_dim=70 --set train.batch_size=8 --set train.lr=3e-3";
  BOOST_TEST_REQUIRE(vit_hpc(2, "gpu_bf16_hs12", b) == 0);
  const auto losses = step_losses("gpu_bf16_hs12");
  BOOST_TEST_REQUIRE(losses.size() == 6u);
  for (double l : losses) BOOST_TEST(std::isfinite(l));
  std::ifstream log(scratch() + "/gpu_bf16_hs12.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  size_t notes = 0;
  for (size_t at = text.find("attention: "); at != std::string::npos; at = text.find("attention: ", at + 1)) ++notes;
  BOOST_TEST(notes == 1u, "the fallback is reported once per job, found " << notes << " times:\n" << text);
  BOOST_TEST(text.find("padded") != std::string::npos);
}
