// gemini on the GPU: the CPU AdamW of offloaded chunks overlapping the next
// step's forward (CpuUpdate::Overlap, what the trainer runs) against the
// synchronous finish and the on-demand mode, bit for bit: bf16, offload 0.5
// and 1, with and without parameter offload, one and two micro-batches, on
// 1 and 2 ranks (NCCL). test_gemini checks the same on the CPU, where every
// copy is synchronous; here the uploads, the communication stream's waits
// for them, the gathers from pinned host parts and the staging buffers the
// CPU AdamW writes again are real asynchronous copies, so a missing stream
// wait shows here and not there. The model (64 px, hidden 256, 4 blocks of
// ~0.8 MiB of bf16 parameters in chunks of 1 MiB: one block each) is large
// enough that a chunk's CPU update takes a while next to its forward.
//
// Tolerance: none. Both runs execute the same kernels on the same data in
// the same order on one GPU runtime (deterministic attention backward,
// cuBLASLt plans per shape, NCCL collectives of the same sizes), and the
// CPU AdamW is element-wise: only its timing differs between the modes.
#define BOOST_TEST_MODULE gemini_gpu
#include <boost/test/unit_test.hpp>

#include "common/gpu_main.h"  // first: skip before MPI starts when there is no GPU
#include "common/mpi_main.h"

#include <memory>
#include <string>
#include <vector>

#include "comm/bootstrap.h"
#include "comm/process_mesh.h"
#include "core/rng.h"
#include "kernels/cpu_threads.h"
#include "kernels/gpu_context.h"
#include "model/params.h"
#include "parallel/plugin.h"

#include "same_bits_check.h"

using namespace vit;
using Mode = parallel::GeminiOptions::CpuUpdate;

namespace {

constexpr int kGlobalBatch = 8;
constexpr int kSteps = 5;

model::ViTConfig test_vit() {
  model::ViTConfig c;
  c.image_size = 64;
  c.patch_size = 16;
  c.hidden = 256;
  c.depth = 4;
  c.heads = 4;
  c.mlp_dim = 512;
  c.num_classes = 3;
  return c;
}

struct Outcome {
  std::vector<double> losses, norms, eval_losses;
  std::vector<float> first_grads, state, params;
};

// kSteps steps of gemini; the first one's gradient gathered and an
// evaluation after the second (both wait for the updates), the forwards of
// the fourth and fifth overlapping the last step's CPU AdamW; then the
// exported state and the parameters.
Outcome train(const Context& ctx, comm::ProcessMesh& mesh, float offload, bool param_offload, int accum, Mode mode) {
  const model::ViTConfig cfg = test_vit();
  const size_t per_image = static_cast<size_t>(cfg.image_size) * cfg.image_size * cfg.channels;
  std::vector<uint8_t> images(static_cast<size_t>(kSteps) * kGlobalBatch * per_image);
  std::vector<int32_t> labels(static_cast<size_t>(kSteps) * kGlobalBatch);
  Rng rng(2024);
  for (auto& p : images) p = static_cast<uint8_t>(rng.below(256));
  for (auto& l : labels) l = static_cast<int32_t>(rng.below(3));

  parallel::PluginOptions opts;
  opts.name = "gemini";
  opts.precision = DType::BF16;
  opts.weight_decay = 0.05f;
  opts.grad_clip = 0.05f;
  opts.gemini.chunk_bytes = size_t(1) << 20;
  opts.gemini.offload_optim_frac = offload;
  opts.gemini.offload_param_frac = param_offload ? offload : 0.0f;
  opts.gemini.cpu_update = mode;
  model::ComputeConfig compute;
  compute.dtype = DType::BF16;
  const int dp = mesh.dp_size(), per_rank = kGlobalBatch / dp, per_micro = per_rank / accum;
  auto plugin = parallel::make_plugin(opts, cfg, compute, per_micro, parallel::PluginEnv{ctx, &mesh});
  const model::ParamLayout layout(cfg);
  std::vector<float> init(static_cast<size_t>(layout.total()));
  model::init_params(layout, 0.02f, 42, init.data());
  plugin->load_params(init);

  Outcome out;
  for (int step = 0; step < kSteps; ++step) {
    const int first = step * kGlobalBatch + mesh.dp_rank() * per_rank;
    std::vector<parallel::MicroBatch> micro(static_cast<size_t>(accum));
    for (int m = 0; m < accum; ++m) {
      micro[m].images = images.data() + static_cast<size_t>(first + m * per_micro) * per_image;
      micro[m].labels = labels.data() + first + m * per_micro;
      micro[m].count = per_micro;
    }
    const parallel::StepResult r = plugin->train_step(micro, kGlobalBatch, 1e-3f, 1.0f, step + 1);
    out.losses.push_back(r.loss);
    out.norms.push_back(r.grad_norm);
    if (step == 0) out.first_grads = plugin->gather_grads();
    if (step == 1) out.eval_losses.push_back(plugin->all_reduce_eval(plugin->eval_batch(micro[0])).loss_sum);
  }
  for (parallel::StatePart part : parallel::kStateParts) {
    const std::vector<float> v = plugin->export_state(part);
    out.state.insert(out.state.end(), v.begin(), v.end());
  }
  out.params = plugin->gather_params();
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(cpu_updates_overlapping_the_next_forward_give_the_synchronous_bits_on_the_gpu) {
  const comm::WorldInfo info = comm::bootstrap_world("cuda");
  kernels::set_cpu_threads(4);
  GpuRuntime gpu(info.gpu_index, /*tf32=*/false);
  comm::ProcessMesh mesh(MPI_COMM_WORLD, info, 1, 1);
  for (float offload : {0.5f, 1.0f}) {
    for (bool param_offload : {false, true}) {
      for (int accum : {1, 2}) {
        const Outcome ref = train(gpu.context(), mesh, offload, param_offload, accum, Mode::Synchronous);
        for (Mode mode : {Mode::Overlap, Mode::OnDemand}) {
          const Outcome out = train(gpu.context(), mesh, offload, param_offload, accum, mode);
          BOOST_TEST_CONTEXT("offload " << offload << (param_offload ? " with parameter offload" : "") << ", accum "
                                        << accum << ", " << (mode == Mode::Overlap ? "overlap" : "on demand")
                                        << ", " << mesh.dp_size() << " rank(s)") {
            same_bits::check(out, ref);
          }
        }
      }
    }
  }
}
