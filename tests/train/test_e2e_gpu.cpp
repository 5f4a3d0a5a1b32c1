// vit_hpc end to end on the GPU, through mpirun (skipped without a GPU):
// torch_ddp and torch_ddp_fp16 on 1 and on 2 ranks with the same global
// batch give the same losses and gradient norms (on a one-GPU machine the 2
// ranks share the GPU and talk through MPI), fp16 reports the unscaled
// gradient norm whatever its loss scale, an fp16 run whose loss scale
// overflows the gradients skips those steps and lowers the scale, a bf16
// head size of 12 runs on the padded attention path, low_level_zero
// (stage 1 and 2) and gemini (offload 0 and 1) follow torch_ddp_fp16 in bf16,
// gemini follows torch_ddp in fp32 from a checkpoint, and hybrid_parallel
// (tp2, pp2 with 4 micro-batches) follows torch_ddp in fp32 and
// torch_ddp_fp16 in bf16 (gemini and hybrid_parallel in bf16 also with every
// recipe option on, kRecipe); a run stopped at step 10 and resumed gives the
// steps and weights of a straight run (bf16, fp16 with a moving loss scale),
// steps replayed as CUDA graphs give the bits of eager ones, and the
// collective watchdog ends a job whose rank was stopped.
#define BOOST_TEST_MODULE e2e_gpu
#include <boost/test/unit_test.hpp>

#include "common/gpu_main.h"

#include <cmath>
#include <map>
#include <set>
#include <signal.h>
#include <cstdio>
#include <iterator>
#include <sstream>

#include "e2e_util.h"
#include "io/safetensors.h"

using namespace e2e;

namespace {
const std::string kGpu = "--set run.device=cuda --set eval.enabled=false --set train.steps=6 ";
// Every recipe option at once (mixup targets, drop-path masks, label
// smoothing, per-parameter lr and decay, the weight average, which the
// export then holds): the gemini and hybrid_parallel cases run once without
// and once with it, against torch_ddp_fp16 with the same options.
const std::string kRecipe = " --set data.mixup_alpha=0.2 --set model.drop_path=0.1 --set train.label_smoothing=0.1 "
                            "--set train.layer_decay=0.8 --set train.no_decay_bias_norm=true --set train.ema_decay=0.9";
}

// Why grad_norm is compared as well as the losses: AdamW cancels a constant
// factor on every gradient up to eps, so a wrong gradient scale (Sum instead
// of Avg, a division by the local instead of the global batch, a missing
// 1/loss_scale) leaves the loss curve where it was; grad_norm is the
// unscaled norm of the gradient of the mean loss over the global batch, and
// such a bug moves it by a factor of 2 (the rank count here) or by the loss
// scale.

BOOST_AUTO_TEST_CASE(torch_ddp_fp32_one_and_two_ranks_agree) {
  // TF32 off: what differs is only the fp32 summation order of the
  // gradients (per-rank batches, then the all-reduce, and GEMMs that may
  // pick another algorithm for 8 rows than for 16): ~1e-7 relative per
  // step, growing slowly through AdamW, as on the CPU where 6 steps stay
  // within 5e-7 (losses) and 1.5e-6 (grad norms). Bounds: losses 1e-4
  // relative as before, grad norms 1e-5 relative on every step plus 5e-5
  // absolute on the whole curve (the norms are O(1) to O(10)).
  const std::string a = kGpu + "--set plugin.tf32=false ";
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_fp32_np1", a + "--set train.batch_size=16") == 0);
  BOOST_TEST_REQUIRE(vit_hpc(2, "gpu_fp32_np2", a + "--set train.batch_size=8") == 0);
  const auto l1 = step_losses("gpu_fp32_np1"), l2 = step_losses("gpu_fp32_np2");
  const auto g1 = step_grad_norms("gpu_fp32_np1"), g2 = step_grad_norms("gpu_fp32_np2");
  BOOST_TEST_REQUIRE(l1.size() == 6u);
  for (size_t i = 0; i < l1.size(); ++i) {
    BOOST_TEST_CONTEXT("step " << i + 1) {
      BOOST_TEST(l2[i] == l1[i], boost::test_tools::tolerance(1e-4));
      BOOST_TEST(g2[i] == g1[i], boost::test_tools::tolerance(1e-5));
    }
  }
  BOOST_TEST(max_abs_diff(g2, g1) <= 5e-5);
}

BOOST_AUTO_TEST_CASE(torch_ddp_fp16_bf16_one_and_two_ranks_agree) {
  // bf16 activations (8-bit mantissa, unit roundoff u = 2^-9 = 2e-3)
  // computed on batches of 16 vs 8 round differently where the GEMMs sum in
  // another order; a gradient goes through ~5 such roundings in sequence, so
  // two bf16 gradients of the same loss may differ by ~2 x 5 u = 2e-2
  // relative at worst (and by far less on average: the norm sums ~1e5
  // elements whose rounding errors are not aligned). Step 1 starts from the
  // same weights: loss within 5e-3, grad norm within 1e-2; over 6 steps
  // both within 2e-2. A grad norm off by the rank count misses by 50%.
  const std::string b = kGpu + "--set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 ";
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_bf16_np1", b + "--set train.batch_size=16") == 0);
  BOOST_TEST_REQUIRE(vit_hpc(2, "gpu_bf16_np2", b + "--set train.batch_size=8") == 0);
  const auto l1 = step_losses("gpu_bf16_np1"), l2 = step_losses("gpu_bf16_np2");
  const auto g1 = step_grad_norms("gpu_bf16_np1"), g2 = step_grad_norms("gpu_bf16_np2");
  BOOST_TEST_REQUIRE(l1.size() == 6u);
  BOOST_TEST(l2[0] == l1[0], boost::test_tools::tolerance(5e-3));
  BOOST_TEST(g2[0] == g1[0], boost::test_tools::tolerance(1e-2));
  for (size_t i = 0; i < l1.size(); ++i) {
    BOOST_TEST_CONTEXT("step " << i + 1) {
      BOOST_TEST(l2[i] == l1[i], boost::test_tools::tolerance(2e-2));
      BOOST_TEST(g2[i] == g1[i], boost::test_tools::tolerance(2e-2));
    }
  }
}

BOOST_AUTO_TEST_CASE(torch_ddp_fp16_one_and_two_ranks_agree) {
  // fp16 keeps 11 bits (u = 2^-12 = 2.4e-4): the bf16 reasoning gives
  // ~2 x 5 u = 2.5e-3; 5e-3 for losses and grad norms on every step.
  const std::string f = kGpu + "--set plugin.name=torch_ddp_fp16 --set plugin.precision=fp16 ";
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_fp16_np1", f + "--set train.batch_size=16") == 0);
  BOOST_TEST_REQUIRE(vit_hpc(2, "gpu_fp16_np2", f + "--set train.batch_size=8") == 0);
  const auto l1 = step_losses("gpu_fp16_np1"), l2 = step_losses("gpu_fp16_np2");
  const auto g1 = step_grad_norms("gpu_fp16_np1"), g2 = step_grad_norms("gpu_fp16_np2");
  BOOST_TEST_REQUIRE(l1.size() == 6u);
  for (size_t i = 0; i < l1.size(); ++i) {
    BOOST_TEST_CONTEXT("step " << i + 1) {
      BOOST_TEST(l2[i] == l1[i], boost::test_tools::tolerance(5e-3));
      BOOST_TEST(g2[i] == g1[i], boost::test_tools::tolerance(5e-3));
    }
  }
}

BOOST_AUTO_TEST_CASE(fp16_grad_norm_is_unscaled) {
  // The same fp16 run at loss scales 1024 and 8 (neither overflows; a
  // growth interval of 1000 keeps them over these 2 steps) must report the
  // same, unscaled grad_norm. Both scales are powers of two, so the scaled
  // gradients are exact multiples of each other except where an fp16
  // activation gradient falls below the normal range (6.1e-5) at scale 8
  // and loses bits; such elements carry a small share of the norm: 2e-3
  // relative (not yet measured on a GPU; expected far below). Against fp32 (TF32 off) on step 1, from the same
  // weights: fp16 rounding only (the 1-vs-2-rank bound above), 5e-3. A
  // missing 1/loss_scale is off by 1024x or 8x.
  const std::string f = "--set run.device=cuda --set eval.enabled=false --set train.steps=2 "
                        "--set train.batch_size=16 --set plugin.growth_interval=1000 ";
  const std::string fp16 = f + "--set plugin.name=torch_ddp_fp16 --set plugin.precision=fp16 ";
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_scale_1024", fp16 + "--set plugin.initial_scale=1024") == 0);
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_scale_8", fp16 + "--set plugin.initial_scale=8") == 0);
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_scale_fp32", f + "--set plugin.tf32=false") == 0);
  const auto s1024 = step_field("gpu_scale_1024", "loss_scale"), s8 = step_field("gpu_scale_8", "loss_scale");
  for (const char* run : {"gpu_scale_1024", "gpu_scale_8"}) {
    for (const auto& l : of_type(read_jsonl(scratch() + "/" + run + "/rank_0.jsonl"), "step")) {
      BOOST_TEST(l.at("skipped") == false, run << " step " << l.at("step"));
    }
  }
  const auto g1024 = step_grad_norms("gpu_scale_1024"), g8 = step_grad_norms("gpu_scale_8");
  const auto g32 = step_grad_norms("gpu_scale_fp32");
  BOOST_TEST_REQUIRE(g1024.size() == 2u);
  BOOST_TEST_REQUIRE(g8.size() == 2u);
  BOOST_TEST_REQUIRE(g32.size() == 2u);
  for (size_t i = 0; i < 2; ++i) {
    BOOST_TEST_CONTEXT("step " << i + 1) {
      BOOST_TEST(s1024[i] == 1024.0);
      BOOST_TEST(s8[i] == 8.0);
      BOOST_TEST(g1024[i] == g8[i], boost::test_tools::tolerance(2e-3));
    }
  }
  BOOST_TEST(g1024[0] == g32[0], boost::test_tools::tolerance(5e-3));
  BOOST_TEST(g8[0] == g32[0], boost::test_tools::tolerance(5e-3));
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

namespace {
// The exported fp32 weights of a run (checkpoint.export_hf), every tensor in
// name order, flattened.
std::vector<float> exported_weights(const std::string& run) {
  const auto file = vit::io::read_safetensors(scratch() + "/" + run + "_export/model.safetensors");
  std::vector<float> all;
  for (const auto& [name, t] : file.tensors) {
    const auto v = t.to_float();
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

// Exported weights of a run against the reference run's: the largest
// element difference and the relative L2 norm of the difference.
struct WeightDiff {
  double max_abs, rel_l2;
};
WeightDiff weight_diff(const std::vector<float>& w, const std::vector<float>& ref) {
  double max_d = 0, num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(w[i]) - ref[i];
    max_d = std::max(max_d, std::abs(d));
    num += d * d;
    den += double(ref[i]) * ref[i];
  }
  return {max_d, std::sqrt(num / den)};
}
}  // namespace

BOOST_AUTO_TEST_CASE(low_level_zero_matches_torch_ddp_fp16_in_bf16) {
  // 2 ranks (NCCL on a 2-GPU machine), bf16, 10 steps, clipping below the
  // gradient norm (0.5; the norms here are 1-3), batch 8 per rank. The two
  // plugins run the same forward and backward on the same bf16 weights; the
  // gradient sums are the same additions (2 ranks), only the norm is summed
  // per shard and then over ranks. That changes the clip factor by ~1e-7,
  // which can flip the rounding of a few bf16 weights, and the runs drift
  // apart by bf16 roundings: losses and grad_norm within 1e-2 relative (the
  // bf16 bound above), the exported fp32 master weights within 1e-3 relative
  // L2 and 5e-3 absolute. AdamW moves a weight by up to ~lr (1e-3) per step
  // whatever its gradient's size, so a weight whose small gradient changes
  // sign between the runs differs by a few lr: on one H200 (2 ranks sharing
  // it) seeds 1-3 gave a max |d| of 1.1e-3, 3.0e-4 and 7e-9, and the seed
  // here 2.6e-5 before the residual adds moved into the GEMMs and 2.8e-3
  // after (relative L2 4.9e-4). A wrong scale or a bucket part in the wrong
  // place moves the relative L2, the losses and the norms by far more.
  const std::string common = "--set run.device=cuda --set eval.enabled=false --set train.steps=10 "
                             "--set plugin.precision=bf16 --set train.batch_size=8 --set train.grad_clip=0.5 ";
  auto run = [&](const std::string& name, const std::string& plugin) {
    return vit_hpc(2, name, common + plugin + " --set checkpoint.export_hf=" + scratch() + "/" + name + "_export");
  };
  BOOST_TEST_REQUIRE(run("gpu_llz_ddp", "--set plugin.name=torch_ddp_fp16") == 0);
  const auto l0 = step_losses("gpu_llz_ddp"), g0 = step_grad_norms("gpu_llz_ddp");
  const auto w0 = exported_weights("gpu_llz_ddp");
  BOOST_TEST_REQUIRE(l0.size() == 10u);
  for (int stage : {1, 2}) {
    const std::string name = "gpu_llz_stage" + std::to_string(stage);
    BOOST_TEST_REQUIRE(run(name, "--set plugin.name=low_level_zero --set plugin.stage=" + std::to_string(stage)) == 0);
    const auto l = step_losses(name), g = step_grad_norms(name);
    const auto w = exported_weights(name);
    BOOST_TEST_REQUIRE(l.size() == l0.size());
    BOOST_TEST_REQUIRE(w.size() == w0.size());
    for (size_t i = 0; i < l0.size(); ++i) {
      BOOST_TEST(l[i] == l0[i], boost::test_tools::tolerance(1e-2));
      BOOST_TEST(g[i] == g0[i], boost::test_tools::tolerance(1e-2));
    }
    const auto [max_d, rel_l2] = weight_diff(w, w0);
    BOOST_TEST_MESSAGE("stage " << stage << ": final weights max |d| " << max_d << ", rel L2 " << rel_l2);
    std::printf("low_level_zero stage %d vs torch_ddp_fp16 (bf16, 2 ranks, 10 steps): loss[9] %.6f vs %.6f, "
                "grad_norm[9] %.6f vs %.6f, weights max |d| %.3e rel L2 %.3e\n",
                stage, l.back(), l0.back(), g.back(), g0.back(), max_d, rel_l2);
    BOOST_TEST(max_d < 5e-3);
    BOOST_TEST(rel_l2 < 1e-3);
  }
}

BOOST_AUTO_TEST_CASE(gemini_matches_torch_ddp_fp16_in_bf16) {
  // gemini with offload 0 (everything on the GPUs) and offload 1 (master
  // weights, moments and gradient parts in pinned host memory, the CPU AdamW
  // writing the bf16 parts that are uploaded) against torch_ddp_fp16: 2 ranks
  // (NCCL on a 2-GPU machine), bf16, 10 steps, clipping below the gradient
  // norm, batch 8 per rank, the 64 px test model widened to hidden 256 so
  // that no two blocks (394k parameters, 0.75 MiB of bf16 each) fit in one
  // chunk of the smallest size, 1 MiB: 4 chunks (head + block 3, block 2,
  // block 1, block 0 + embeddings), more than the pool's 3 slots, so gathers
  // are prefetched and slots reused. The forward and backward are
  // the same bf16 arithmetic on the same bf16 weights (gathered, not
  // resident); the gradients are summed per chunk by a reduce-scatter and the
  // norm per part then over ranks, as in low_level_zero stage 2, so the
  // reasoning and the bounds of the test above apply unchanged: losses and
  // grad_norm within 1e-2 relative, exported fp32 master weights within 5e-3
  // absolute and 1e-3 relative L2. The CPU AdamW computes the same fp32
  // formula as the GPU kernel (FMA contraction may differ: ~1e-7 of a weight
  // per step). A chunk gathered before its update landed, a part uploaded to
  // the wrong place or a norm missing the host's parts moves them by far more.
  const std::string common = "--set run.device=cuda --set eval.enabled=false --set train.steps=10 "
                             "--set plugin.precision=bf16 --set train.batch_size=8 --set train.grad_clip=0.5 "
                             "--set model.hidden=256 ";
  for (const std::string& recipe : {std::string(), kRecipe}) {
    const std::string tag = recipe.empty() ? "" : "_recipe";
    auto run = [&](const std::string& name, const std::string& plugin) {
      return vit_hpc(2, name,
                     common + plugin + recipe + " --set checkpoint.export_hf=" + scratch() + "/" + name + "_export");
    };
    BOOST_TEST_REQUIRE(run("gpu_gem_ddp" + tag, "--set plugin.name=torch_ddp_fp16") == 0);
    const auto l0 = step_losses("gpu_gem_ddp" + tag), g0 = step_grad_norms("gpu_gem_ddp" + tag);
    const auto w0 = exported_weights("gpu_gem_ddp" + tag);
    BOOST_TEST_REQUIRE(l0.size() == 10u);
    for (const char* offload : {"0", "1"}) {
      const std::string name = std::string("gpu_gem_offload") + offload + tag;
      BOOST_TEST_REQUIRE(run(name, std::string("--set plugin.name=gemini --set plugin.chunk_size_mb=1 "
                                               "--set plugin.offload_optim_frac=") + offload) == 0);
      const auto l = step_losses(name), g = step_grad_norms(name);
      const auto w = exported_weights(name);
      BOOST_TEST_REQUIRE(l.size() == l0.size());
      BOOST_TEST_REQUIRE(w.size() == w0.size());
      for (size_t i = 0; i < l0.size(); ++i) {
        BOOST_TEST_CONTEXT("offload " << offload << ", step " << i + 1) {
          BOOST_TEST(l[i] == l0[i], boost::test_tools::tolerance(1e-2));
          BOOST_TEST(g[i] == g0[i], boost::test_tools::tolerance(1e-2));
        }
      }
      const auto [max_d, rel_l2] = weight_diff(w, w0);
      std::printf("gemini offload %s%s vs torch_ddp_fp16 (bf16, 2 ranks, 10 steps): loss[0] %.6f vs %.6f, loss[9] %.6f "
                  "vs %.6f, grad_norm[9] %.6f vs %.6f, weights max |d| %.3e rel L2 %.3e\n",
                  offload, recipe.empty() ? "" : " with the recipe", l.front(), l0.front(), l.back(), l0.back(),
                  g.back(), g0.back(), max_d, rel_l2);
      // Both offloads drift apart from torch_ddp_fp16 by bf16 roundings (the
      // norm summed per part, as above; offload 1 also updates on the CPU,
      // the same fp32 formula with another contraction of its multiply-adds).
      // AdamW moves a weight by up to ~lr per step whatever its gradient's
      // size, so a weight whose small gradient changes sign between the runs
      // can differ by a few lr: measured on one H200 2.9e-3 with offload 1,
      // and with offload 0 3.7e-9 until the 16-bit GELU's rounding changed
      // (d5dcf27), then 2.6e-3 (relative L2 3.4e-4). Bound 5e-3, as in the
      // low_level_zero case; the relative L2 keeps the 1e-3 bound.
      BOOST_TEST(max_d < 5e-3, "offload " << offload << tag);
      BOOST_TEST(rel_l2 < 1e-3, "offload " << offload << tag);
    }
  }
}

BOOST_AUTO_TEST_CASE(gemini_matches_torch_ddp_in_fp32_from_a_checkpoint) {
  // Issue 12's GPU parity in fp32 (TF32 off), on 1 and on 2 ranks (NCCL on a
  // 2-GPU machine), offload 0, 0.5 and 1, starting from a transformers
  // checkpoint that vit_hpc exported after 3 steps of torch_ddp (so the
  // weights are not a fresh initialisation). Same forward and backward on
  // the same fp32 weights; only the order of the gradient sums (per chunk
  // reduce-scatter, the norm summed per part) and the CPU AdamW's
  // contraction differ, ~1e-7 relative: the first loss must equal
  // torch_ddp's to 1e-6 (pretrained weights used, unlike Colossal-AI's
  // issue 5034), losses and grad_norm of 8 steps to 1e-5, exported weights
  // to 2e-5 absolute.
  const std::string base = "--set run.device=cuda --set eval.enabled=false --set plugin.tf32=false "
                           "--set train.grad_clip=1.0 --set model.hidden=256 --set train.batch_size=8 ";
  const std::string ckpt = scratch() + "/gem32_seed_export";
  BOOST_TEST_REQUIRE(vit_hpc(1, "gem32_seed", base + "--set train.steps=3 --set checkpoint.export_hf=" + ckpt) == 0);
  const std::string from = base + "--set train.steps=8 --set model.pretrained=" + ckpt + " ";
  for (int ranks : {1, 2}) {
    const std::string bs = ranks == 1 ? "--set train.batch_size=16 " : "";
    const std::string ref = "gem32_ddp_np" + std::to_string(ranks);
    BOOST_TEST_REQUIRE(vit_hpc(ranks, ref, from + bs + "--set checkpoint.export_hf=" + scratch() + "/" + ref +
                                               "_export") == 0);
    const auto l0 = step_losses(ref), g0 = step_grad_norms(ref);
    const auto w0 = exported_weights(ref);
    for (const char* offload : {"0", "0.5", "1"}) {
      const std::string name = "gem32_np" + std::to_string(ranks) + "_off" + offload;
      BOOST_TEST_REQUIRE(vit_hpc(ranks, name, from + bs + "--set plugin.name=gemini --set plugin.chunk_size_mb=1 " +
                                                  "--set plugin.offload_optim_frac=" + offload +
                                                  " --set checkpoint.export_hf=" + scratch() + "/" + name +
                                                  "_export") == 0);
      const auto l = step_losses(name), g = step_grad_norms(name);
      const auto w = exported_weights(name);
      BOOST_TEST_REQUIRE(l.size() == l0.size());
      BOOST_TEST(l[0] == l0[0], boost::test_tools::tolerance(1e-6));
      for (size_t i = 0; i < l0.size(); ++i) {
        BOOST_TEST(l[i] == l0[i], boost::test_tools::tolerance(1e-5));
        BOOST_TEST(g[i] == g0[i], boost::test_tools::tolerance(1e-5));
      }
      const double max_d = weight_diff(w, w0).max_abs;
      std::printf("gemini fp32 %d rank(s) offload %s vs torch_ddp: loss[0] %.7f vs %.7f, loss[7] %.7f vs %.7f, "
                  "weights max |d| %.3e\n",
                  ranks, offload, l.front(), l0.front(), l.back(), l0.back(), max_d);
      BOOST_TEST(max_d < 2e-5, name);
    }
  }
}

BOOST_AUTO_TEST_CASE(hybrid_parallel_tp2_and_pp2_match_torch_ddp_in_fp32) {
  // 2 ranks (NCCL on a 2-GPU machine: the tp all-reduces and the pipeline's
  // send/recv on the compute stream, the dp buckets on the comm stream),
  // TF32 off, global batch 16: torch_ddp 8 per rank; tp2 and pp2 (4
  // pipeline micro-batches of 4) one replica of 16. Only the fp32 summation
  // order differs (GEMMs over 16, 8 or 4 rows and over half of K for the
  // row-parallel layers, then the reductions), as between 1 and 2 ranks of
  // torch_ddp above: losses 1e-4 and grad_norm 1e-5 relative per step, the
  // exported weights 1e-4 relative L2 (measured on the CPU after 4 steps:
  // 2e-6). A dropped reduction or a wrong micro-batch is off by percents.
  const std::string common = kGpu + "--set plugin.tf32=false ";
  auto run = [&](const std::string& name, const std::string& extra) {
    return vit_hpc(2, name, common + extra + " --set checkpoint.export_hf=" + scratch() + "/" + name + "_export");
  };
  BOOST_TEST_REQUIRE(run("gpu_hyb32_ddp", "--set train.batch_size=8") == 0);
  const auto l0 = step_losses("gpu_hyb32_ddp"), g0 = step_grad_norms("gpu_hyb32_ddp");
  const auto w0 = exported_weights("gpu_hyb32_ddp");
  BOOST_TEST_REQUIRE(l0.size() == 6u);
  for (const auto& [name, layout] : std::vector<std::pair<std::string, std::string>>{
           {"gpu_hyb32_tp2", "--set plugin.tp_size=2"},
           {"gpu_hyb32_pp2", "--set plugin.pp_size=2 --set plugin.num_microbatches=4"}}) {
    BOOST_TEST_REQUIRE(run(name, "--set plugin.name=hybrid_parallel --set train.batch_size=16 " + layout) == 0);
    const auto l = step_losses(name), g = step_grad_norms(name);
    const auto w = exported_weights(name);
    BOOST_TEST_REQUIRE(l.size() == l0.size());
    BOOST_TEST_REQUIRE(w.size() == w0.size());
    for (size_t i = 0; i < l0.size(); ++i) {
      BOOST_TEST_CONTEXT(name << " step " << i + 1) {
        BOOST_TEST(l[i] == l0[i], boost::test_tools::tolerance(1e-4));
        BOOST_TEST(g[i] == g0[i], boost::test_tools::tolerance(1e-5));
      }
    }
    const auto [max_d, rel_l2] = weight_diff(w, w0);
    std::printf("%s vs torch_ddp (fp32, 2 ranks, 6 steps): loss[5] %.7f vs %.7f, grad_norm[5] %.7f vs %.7f, "
                "weights max |d| %.3e rel L2 %.3e\n",
                name.c_str(), l.back(), l0.back(), g.back(), g0.back(), max_d, rel_l2);
    BOOST_TEST(rel_l2 < 1e-4, name);
  }
}

BOOST_AUTO_TEST_CASE(hybrid_parallel_tp2_and_pp2_match_torch_ddp_fp16_in_bf16) {
  // 2 ranks, bf16, 10 steps, clipping below the gradient norm (0.5; the
  // norms are 1-3), global batch 16 (torch_ddp_fp16 8 per rank; tp2 and pp2
  // with 4 micro-batches one replica of 16). Unlike low_level_zero above,
  // the forward differs in bf16: GEMMs over other row counts and, for tp, the
  // row-parallel outputs rounded to bf16 per rank before their sum. That is
  // the difference between 1 and 2 ranks of torch_ddp_fp16 in bf16 (test
  // above): step 1 within 5e-3 (loss) and 1e-2 (grad_norm), every step
  // within 2e-2 for both. Exported fp32 master weights: bf16 gradient noise
  // of ~1e-2 relative moves AdamW's updates by ~1e-2 of lr per step
  // (elements whose gradient is near the noise by up to lr): 1e-2 relative
  // L2 after 10 steps of lr 1e-3 (not yet measured on a GPU; expected far
  // below). A stage's gradient lost, a reduction dropped or the wrong
  // micro-batch moves grad_norm by several percent on the first step.
  const std::string common = "--set run.device=cuda --set eval.enabled=false --set train.steps=10 "
                             "--set plugin.precision=bf16 --set train.grad_clip=0.5 ";
  for (const std::string& recipe : {std::string(), kRecipe}) {
    const std::string tag = recipe.empty() ? "" : "_recipe";
    auto run = [&](const std::string& name, const std::string& extra) {
      return vit_hpc(2, name,
                     common + extra + recipe + " --set checkpoint.export_hf=" + scratch() + "/" + name + "_export");
    };
    BOOST_TEST_REQUIRE(run("gpu_hyb_ddp" + tag, "--set plugin.name=torch_ddp_fp16 --set train.batch_size=8") == 0);
    const auto l0 = step_losses("gpu_hyb_ddp" + tag), g0 = step_grad_norms("gpu_hyb_ddp" + tag);
    const auto w0 = exported_weights("gpu_hyb_ddp" + tag);
    BOOST_TEST_REQUIRE(l0.size() == 10u);
    for (const auto& [name, layout] : std::vector<std::pair<std::string, std::string>>{
             {"gpu_hyb_tp2" + tag, "--set plugin.tp_size=2"},
             {"gpu_hyb_pp2" + tag, "--set plugin.pp_size=2 --set plugin.num_microbatches=4"}}) {
      BOOST_TEST_REQUIRE(run(name, "--set plugin.name=hybrid_parallel --set train.batch_size=16 " + layout) == 0);
      const auto l = step_losses(name), g = step_grad_norms(name);
      const auto w = exported_weights(name);
      BOOST_TEST_REQUIRE(l.size() == l0.size());
      BOOST_TEST_REQUIRE(w.size() == w0.size());
      BOOST_TEST(l[0] == l0[0], boost::test_tools::tolerance(5e-3));
      BOOST_TEST(g[0] == g0[0], boost::test_tools::tolerance(1e-2));
      for (size_t i = 0; i < l0.size(); ++i) {
        BOOST_TEST_CONTEXT(name << " step " << i + 1) {
          BOOST_TEST(l[i] == l0[i], boost::test_tools::tolerance(2e-2));
          BOOST_TEST(g[i] == g0[i], boost::test_tools::tolerance(2e-2));
        }
      }
      const auto [max_d, rel_l2] = weight_diff(w, w0);
      std::printf("%s vs torch_ddp_fp16 (bf16, 2 ranks, 10 steps): loss[0] %.6f vs %.6f, grad_norm[0] %.6f vs %.6f, "
                  "loss[9] %.6f vs %.6f, grad_norm[9] %.6f vs %.6f, weights max |d| %.3e rel L2 %.3e\n",
                  name.c_str(), l[0], l0[0], g[0], g0[0], l.back(), l0.back(), g.back(), g0.back(), max_d,
                  rel_l2);
      BOOST_TEST(rel_l2 < 1e-2, name);
    }
  }
}

namespace {

// Every step line's loss, grad norm and loss scale of runs a and b agree bit
// for bit on steps [from, to]; the number of steps that differ otherwise.
size_t differing_steps(const std::string& a, const std::string& b, int64_t from, int64_t to) {
  std::map<int64_t, json> sa, sb;
  for (const json& l : of_type(read_jsonl(scratch() + "/" + a + "/rank_0.jsonl"), "step")) sa[l["step"].get<int64_t>()] = l;
  for (const json& l : of_type(read_jsonl(scratch() + "/" + b + "/rank_0.jsonl"), "step")) sb[l["step"].get<int64_t>()] = l;
  size_t differ = 0;
  for (int64_t s = from; s <= to; ++s) {
    BOOST_TEST_REQUIRE(sa.count(s) == 1u, a << " step " << s);
    BOOST_TEST_REQUIRE(sb.count(s) == 1u, b << " step " << s);
    for (const char* f : {"loss", "grad_norm", "loss_scale", "skipped", "lr"}) differ += sa[s][f] != sb[s][f];
  }
  return differ;
}

}  // namespace

BOOST_AUTO_TEST_CASE(exact_resume_in_bf16_and_fp16) {
  // 20 steps straight vs 10, stop, resume, 10 more, on 2 ranks: bf16
  // (torch_ddp_fp16 and low_level_zero stage 2) and fp16 with a loss scale
  // of 2^20 that may overflow at first (hysteresis 2) and grows after every
  // 3 clean steps, so the resumed run must restore the scaler mid-count (the
  // test checks that the scale moved). The
  // attention runs on the cuBLAS path (cuDNN's fused backward may sum in
  // another order from run to run). Expected: the same step lines and
  // final weights bit for bit. Two straight runs are compared first: if the
  // GPU path is not reproducible run to run here, the resume cannot be
  // bitwise, the test says so and checks the resumed run within the bf16
  // bound of the parity tests above (1e-2) instead.
  const std::string common = "--set run.device=cuda --set eval.enabled=false --set eval.test_at_end=false "
                             "--set train.steps=20 --set train.batch_size=8 --set model.attention=cublas ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"bf16_ddp", "--set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16"},
      {"bf16_zero2", "--set plugin.name=low_level_zero --set plugin.stage=2 --set plugin.precision=bf16"},
      {"fp16_ddp", "--set plugin.name=torch_ddp_fp16 --set plugin.precision=fp16 --set plugin.initial_scale=1048576 "
                   "--set plugin.growth_interval=3 --set plugin.hysteresis=2"},
  };
  for (const auto& [tag, plugin] : cases) {
    BOOST_TEST_CONTEXT(tag) {
      const std::string a = "gpu_resume_" + tag + "_a", b = "gpu_resume_" + tag + "_b", r = "gpu_resume_" + tag;
      const std::string args = common + plugin + " ";
      BOOST_TEST_REQUIRE(vit_hpc(2, a, args + "--set checkpoint.export_hf=" + scratch() + "/" + a + "_export") == 0);
      BOOST_TEST_REQUIRE(vit_hpc(2, b, args + "--set checkpoint.export_hf=" + scratch() + "/" + b + "_export") == 0);
      const std::string resumable = args + "--set checkpoint.dir=" + scratch() + "/" + r + "_ck --set checkpoint.export_hf=" +
                                    scratch() + "/" + r + "_export ";
      // vit_hpc() truncates the log: the resumed part writes to its own.
      BOOST_TEST_REQUIRE(vit_hpc(2, r, resumable + "--set checkpoint.stop_after_steps=10") == 75);
      BOOST_TEST(manifest(r)["status"] == "interrupted");
      BOOST_TEST_REQUIRE(vit_hpc(2, r, resumable) == 0);
      BOOST_TEST(manifest(r)["status"] == "completed");
      BOOST_TEST(manifest(r)["resumes"].size() == 1u);
      const bool reproducible = differing_steps(a, b, 1, 20) == 0 &&
                                slurp(scratch() + "/" + a + "_export/model.safetensors") ==
                                    slurp(scratch() + "/" + b + "_export/model.safetensors");
      if (tag.rfind("fp16", 0) == 0) {
        // The scale must actually move during the run (backed off and grown
        // again) for the resume to test the scaler's state; on 2 H200s it
        // went 2^20 -> 2^19 -> 2^20 -> 2^21 -> 2^20 -> 2^21 -> 2^20 over the
        // 20 steps, so its first and last values can coincide: count values.
        const auto scales = step_field(a, "loss_scale");
        BOOST_TEST(std::set<double>(scales.begin(), scales.end()).size() > 1u);
      }
      if (reproducible) {
        BOOST_TEST(differing_steps(r, a, 1, 20) == 0u);
        BOOST_TEST(slurp(scratch() + "/" + r + "_export/model.safetensors") ==
                   slurp(scratch() + "/" + a + "_export/model.safetensors"));
      } else {
        BOOST_TEST_MESSAGE(tag << ": two straight runs differ: this GPU path is not bitwise reproducible, "
                                  "so the resume is checked within 1e-2");
        std::printf("exact_resume_in_bf16_and_fp16: %s: straight runs differ run to run; resume checked within 1e-2\n",
                    tag.c_str());
        const auto la = step_losses(a), lr = step_losses(r);
        BOOST_TEST_REQUIRE(la.size() == lr.size());
        for (size_t i = 10; i < la.size(); ++i) BOOST_TEST(lr[i] == la[i], boost::test_tools::tolerance(1e-2));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(cuda_graph_replays_give_the_bits_of_eager_steps) {
  // One GPU: forward + backward replayed as CUDA graphs (plugin.cuda_graph,
  // the default) against the same run launched op by op: the same step
  // lines and final weights, bit for bit. bf16 with cuDNN attention, and
  // fp16 whose loss scale backs off and grows (the loss-gradient scale is
  // part of a graph's key: each new scale runs eagerly, then is captured).
  // Two epochs of the 128 test images with an evaluation between them, so
  // graphs are replayed after the evaluation's forward passes too. The
  // graph runs must say they replayed, or the comparison proves nothing.
  const std::string common = "--set run.device=cuda --set eval.enabled=true --set eval.test_at_end=false "
                             "--set data.train_split=test --set train.steps=32 --set train.batch_size=8 ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"bf16", "--set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16"},
      {"fp16", "--set plugin.name=torch_ddp_fp16 --set plugin.precision=fp16 --set plugin.initial_scale=1048576 "
               "--set plugin.growth_interval=3 --set plugin.hysteresis=2"},
  };
  for (const auto& [tag, plugin] : cases) {
    BOOST_TEST_CONTEXT(tag) {
      const std::string g = "gpu_graph_" + tag, e = "gpu_eager_" + tag;
      const std::string args = common + plugin + " ";
      BOOST_TEST_REQUIRE(vit_hpc(1, g, args + "--set checkpoint.export_hf=" + scratch() + "/" + g + "_export") == 0);
      BOOST_TEST_REQUIRE(vit_hpc(1, e, args + "--set plugin.cuda_graph=false --set checkpoint.export_hf=" + scratch() +
                                           "/" + e + "_export") == 0);
      const std::string log = log_of(g);
      const size_t at = log.find("CUDA graphs: ");
      BOOST_TEST_REQUIRE(at != std::string::npos, "the graph run does not report its CUDA graphs:\n" << log);
      const std::string line = log.substr(at, log.find('\n', at) - at);
      BOOST_TEST_MESSAGE(tag << ": " << line);
      int captured = 0, replays = 0;
      BOOST_TEST_REQUIRE(std::sscanf(line.c_str(), "CUDA graphs: %d captured, %d replays", &captured, &replays) == 2);
      BOOST_TEST(captured >= 1);
      BOOST_TEST(replays >= 20, line);
      BOOST_TEST(!contains(log_of(e), "CUDA graphs: "));
      BOOST_TEST(step_losses(g).size() == 32u);
      BOOST_TEST(differing_steps(g, e, 1, 32) == 0u);
      BOOST_TEST(slurp(scratch() + "/" + g + "_export/model.safetensors") ==
                 slurp(scratch() + "/" + e + "_export/model.safetensors"));
      if (tag == "fp16") {
        const auto scales = step_field(g, "loss_scale");
        BOOST_TEST(std::set<double>(scales.begin(), scales.end()).size() > 1u);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(gemm_tuning_cache_is_written_by_one_run_and_read_by_the_next) {
  // plugin.gemm_tuning_cache's default (auto: <run.output_dir>/gemm_tuning.tsv)
  // with the default wide tuning: a first run tunes ViT-B-wide GEMMs (at
  // least 1 GFLOP: hidden 768, 65 tokens, batch 32) and writes the file
  // after its first step; a second run takes every tuned plan from it and
  // tunes none; both give the step lines of a run without tuning, bit for bit.
  const std::string cache = scratch() + "/gemm_tuning.tsv";
  fs::remove(cache);
  const std::string args = "--set run.device=cuda --set eval.enabled=false --set train.steps=3 "
                           "--set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set model.hidden=768 "
                           "--set model.heads=12 --set model.mlp_dim=3072 --set model.depth=2 ";
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_tuning_cold", args) == 0);
  BOOST_TEST_REQUIRE(fs::exists(cache));
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_tuning_warm", args) == 0);
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_tuning_off", args + "--set plugin.gemm_autotune=false") == 0);
  // "GEMM tuning: N cuBLASLt plans tuned, ...; cache <path>: K plans from it"
  auto counts = [](const std::string& run) {
    const std::string log = log_of(run);
    const size_t at = log.find("GEMM tuning: ");
    BOOST_TEST_REQUIRE(at != std::string::npos, run << " does not report its GEMM tuning:\n" << log);
    const std::string line = log.substr(at, log.find('\n', at) - at);
    BOOST_TEST_MESSAGE(run << ": " << line);
    const size_t from = line.find(": ", line.find("; cache "));
    BOOST_TEST_REQUIRE(from != std::string::npos, line);
    int tuned = -1, hits = -1;
    BOOST_TEST_REQUIRE(std::sscanf(line.c_str(), "GEMM tuning: %d cuBLASLt plans tuned", &tuned) == 1, line);
    BOOST_TEST_REQUIRE(std::sscanf(line.c_str() + from, ": %d plans from it", &hits) == 1, line);
    BOOST_TEST(contains(line, "cache " + scratch() + "/gemm_tuning.tsv"), line);
    return std::pair<int, int>{tuned, hits};
  };
  const auto [cold_tuned, cold_hits] = counts("gpu_tuning_cold");
  const auto [warm_tuned, warm_hits] = counts("gpu_tuning_warm");
  BOOST_TEST(cold_tuned >= 4);  // qkv, fc1, fc2 and proj's forwards and input gradients have candidates
  BOOST_TEST(cold_hits == 0);
  BOOST_TEST(warm_tuned == 0);
  BOOST_TEST(warm_hits == cold_tuned);
  BOOST_TEST(!contains(log_of("gpu_tuning_warm"), "cached choices left out"));
  size_t lines = 0;
  std::istringstream file(slurp(cache));
  for (std::string l; std::getline(file, l);) lines += !l.empty() && l[0] != '#';
  BOOST_TEST(lines == static_cast<size_t>(cold_tuned));
  BOOST_TEST(differing_steps("gpu_tuning_cold", "gpu_tuning_off", 1, 3) == 0u);
  BOOST_TEST(differing_steps("gpu_tuning_warm", "gpu_tuning_off", 1, 3) == 0u);
}

// benchmark: the GPU's power, SM clock and energy over the measured steps,
// read from NVML on this machine (train/gpu_power.h): every figure present
// and inside what a GPU reports, the energy over the mean power as long as
// the measured steps' wall time (~1 s), the energy counter stepping inside
// it, samples throughout, and the line in the log with the energy per
// image.
BOOST_AUTO_TEST_CASE(benchmark_measures_the_gpus_power) {
  const std::string args = "--set run.device=cuda --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 "
                           "--set benchmark.enabled=true --set benchmark.warmup_steps=3 --set benchmark.steps=1000 "
                           "--set train.batch_size=64 --set model.hidden=768 --set model.heads=12 "
                           "--set model.mlp_dim=3072 --set model.depth=2 ";
  BOOST_TEST_REQUIRE(vit_hpc(1, "gpu_bench_power", args) == 0);
  const auto b = of_type(read_jsonl(scratch() + "/gpu_bench_power/rank_0.jsonl"), "benchmark");
  BOOST_TEST_REQUIRE(b.size() == 1u);
  for (const char* f : {"gpu_energy_j", "gpu_power_w", "gpu_power_limit_w", "sm_clock_mhz", "sm_clock_min_mhz",
                        "sm_clock_max_mhz", "power_capped_share", "thermal_share", "power_samples", "energy_counter_span_s"}) {
    BOOST_TEST_REQUIRE(b[0].contains(f), "no " << f << " in the benchmark line:\n" << log_of("gpu_bench_power"));
  }
  const double energy = b[0]["gpu_energy_j"].get<double>(), power = b[0]["gpu_power_w"].get<double>(),
               limit = b[0]["gpu_power_limit_w"].get<double>(), clock = b[0]["sm_clock_mhz"].get<double>(),
               low = b[0]["sm_clock_min_mhz"].get<double>(), top = b[0]["sm_clock_max_mhz"].get<double>(),
               capped = b[0]["power_capped_share"].get<double>(), samples = b[0]["power_samples"].get<double>();
  BOOST_TEST_MESSAGE("power " << power << " W of " << limit << ", SM clock " << clock << " (min " << low << ", max "
                              << top << ") MHz, capped " << capped << ", " << samples << " samples, " << energy
                              << " J");
  BOOST_TEST(limit >= 100.0);
  BOOST_TEST(limit <= 2000.0);
  BOOST_TEST(power > 20.0);
  BOOST_TEST(power <= 1.2 * limit);
  BOOST_TEST(top >= 500.0);
  BOOST_TEST(top <= 4000.0);
  BOOST_TEST(low > 0.0);
  BOOST_TEST(low <= clock);
  BOOST_TEST(clock <= top);
  BOOST_TEST(capped >= 0.0);
  BOOST_TEST(capped <= 1.0);
  const double wall = 1000.0 / b[0]["it_per_s"].get<double>(), span = b[0]["energy_counter_span_s"].get<double>();
  BOOST_TEST_MESSAGE("measured steps " << wall << " s, energy counter steps over " << span << " s");
  BOOST_TEST(std::abs(energy / power - wall) <= 0.1 * wall + 0.02, "metered " << energy / power << " s, wall " << wall);
  BOOST_TEST(span > 0.0);  // the counter stepped at least twice: the power is the counter's
  BOOST_TEST(span <= wall + 0.05);
  // Samples throughout: nominally every 20 ms, but each NVML read takes a few ms here (call C: 27 samples in
  // 1.09 s), so at least one every 100 ms.
  BOOST_TEST(samples >= wall / 0.1);
  const std::string log = log_of("gpu_bench_power");
  BOOST_TEST(contains(log, "GPU power: "), log);
  BOOST_TEST(contains(log, " J per image over the GPU"), log);
}

BOOST_AUTO_TEST_CASE(collective_watchdog_ends_a_gpu_job_whose_rank_was_stopped) {
  // 2 ranks on the GPU: NCCL on a machine with 2 GPUs (the watchdog polls
  // the event behind each NCCL operation, then aborts the communicators),
  // MPI staging through the host when they share one GPU. Rank 1 is
  // SIGSTOPped mid-run; the job must end within timeout + 30 s, exit status
  // 3 on every rank, naming the operation and the missing rank.
  const double timeout = 10;
  Background job(2, "gpu_watchdog",
                 "--set run.device=cuda --set eval.enabled=false --set train.steps=100000 --set train.batch_size=8 "
                 "--set run.collective_timeout_s=10");
  BOOST_TEST_REQUIRE(Background::wait_for([] { return steps_written("gpu_watchdog") >= 5; }, 120));
  const int stopped = rank_pid("gpu_watchdog", 1);
  BOOST_TEST_REQUIRE(::kill(stopped, SIGSTOP) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = job.wait(timeout + 60);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rc == -1) {  // never leave a stopped job behind: every rank, then mpirun
    for (int r = 0; r < 2; ++r) ::kill(rank_pid("gpu_watchdog", r), SIGKILL);
    ::kill(job.pid(), SIGKILL);
  }
  BOOST_TEST_REQUIRE(rc != -1);
  BOOST_TEST(rc == 3);
  BOOST_TEST(took <= timeout + 30, took << " s");
  const std::string log = log_of("gpu_watchdog");
  std::printf("gpu watchdog: ended %.1f s after the SIGSTOP: %s\n", took,
              log.substr(log.find("collective timeout"), 300).c_str());
  BOOST_TEST(contains(log, "collective timeout on rank 0: "), log);
  BOOST_TEST(contains(log, "did not arrive: rank 1 (no answer: stopped, hung or dead)"), log);
  BOOST_TEST(manifest("gpu_watchdog")["status"] == "failed");
  if (process_exists(stopped)) ::kill(stopped, SIGKILL);
}
