// vit_pipeline_timeline: the measured 1F1B timeline of hybrid_parallel (a
// hand-run measurement, like bench_kernels; not a ctest test: it times).
//
//   mpirun -np 4 build/tests/parallel/vit_pipeline_timeline configs/quickstart.yaml
//     --set plugin.name=hybrid_parallel --set plugin.pp_size=4 --set plugin.num_microbatches=4
//     --set train.batch_size=32 --set run.cpu_threads=1 [--set benchmark.steps=10]    (one line)
//
// Synthetic images as in benchmark mode (spec.benchmark.warmup_steps, then
// spec.benchmark.steps measured steps); the plugin synchronises the stream
// around every pipeline action (set_timing), so on the GPU too the host
// clock measures each action. Rank 0 prints, per rank: the mean forward,
// backward, send and receive time per step (a blocking receive holds the
// wait for the neighbour), the idle time after its last action until the
// slowest stage ends the pipeline (the makespan, from the step's start after
// a barrier), the rest of the step (optimizer, data-parallel reductions), the
// bubble fraction
//   1 - (forward + backward) / makespan
// against 1F1B's (pp - 1) / (m + pp - 1) for equal stages and free
// communication, and a character timeline of the last measured step
// (F forward, B backward, s send, r receive or exchange, . nothing).
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "io/cli.h"
#include "parallel/hybrid_parallel.h"
#include "parallel/pipeline_schedule.h"
#include "train/environment.h"
#include "train/trainer.h"

using namespace vit;

namespace {

char symbol(int op) {
  switch (static_cast<parallel::PipeAction::Op>(op)) {
    case parallel::PipeAction::Forward: return 'F';
    case parallel::PipeAction::Backward: return 'B';
    case parallel::PipeAction::SendForward:
    case parallel::PipeAction::SendBackward: return 's';
    default: return 'r';
  }
}

int run_timeline(const ExperimentSpec& spec, const std::string&) {
  train::RunEnvironment env(spec);
  const model::ViTConfig cfg = train::model_config(spec);
  const int B = spec.train.batch_size;
  parallel::PluginEnv penv{env.ctx(), &env.mesh()};
  auto plugin = parallel::make_plugin(train::plugin_options(spec), cfg, train::compute_config(spec), B, penv);
  auto* hp = dynamic_cast<parallel::HybridParallel*>(plugin.get());
  VIT_USER_CHECK(hp != nullptr, "vit_pipeline_timeline measures hybrid_parallel (--set plugin.name=hybrid_parallel)");
  plugin->load_params(train::initial_parameters(spec, cfg, nullptr));
  hp->set_timing(true);

  const size_t image_bytes = static_cast<size_t>(cfg.image_size) * cfg.image_size * cfg.channels;
  std::vector<uint8_t> host_images(image_bytes * static_cast<size_t>(B));
  std::vector<int32_t> labels(static_cast<size_t>(B));
  Rng rng(mix_seed(static_cast<uint64_t>(spec.run.seed), 0xbe4c, plugin->data_parallel_rank()));
  for (auto& p : host_images) p = static_cast<uint8_t>(rng.below(256));
  for (auto& l : labels) l = static_cast<int32_t>(rng.below(static_cast<uint64_t>(cfg.num_classes)));
  const Device dev = env.ctx().device;
  Buffer images(host_images.size(), dev);
  copy_bytes(images.data(), dev, host_images.data(), Device::CPU, host_images.size());
  parallel::MicroBatch mb;
  mb.images = images.as<uint8_t>();
  mb.labels = labels.data();
  mb.count = B;
  mb.on_device = dev == Device::CUDA;
  const int64_t global = static_cast<int64_t>(B) * plugin->data_parallel_size();
  int64_t adam_step = 1;
  for (int i = 0; i < spec.benchmark.warmup_steps; ++i) plugin->train_step({mb}, global, 1e-4f, 1.0f, adam_step++);

  // Mean per measured step: forward, backward, send, recv, step, and the
  // pipeline's makespan (the step start, after a barrier, to the end of the
  // last action of the slowest stage).
  double sums[6] = {0, 0, 0, 0, 0, 0};
  parallel::PipelineStats last;
  for (int i = 0; i < spec.benchmark.steps; ++i) {
    env.mesh().world_comm().barrier();
    plugin->train_step({mb}, global, 1e-4f, 1.0f, adam_step++);
    last = hp->pipeline_stats();
    sums[0] += last.forward_s;
    sums[1] += last.backward_s;
    sums[2] += last.send_s;
    sums[3] += last.recv_s;
    sums[4] += last.step_s;
    double end = last.events.empty() ? 0.0 : last.events.back().end;
    MPI_Allreduce(MPI_IN_PLACE, &end, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    sums[5] += end;
  }
  const int n = std::max(1, spec.benchmark.steps);
  for (double& s : sums) s /= n;

  // The last step's events, as text, gathered on rank 0.
  const double span = last.step_s;
  const int width = 100;
  std::string line(width, '.');
  for (const auto& e : last.events) {
    const int a = std::min(width - 1, static_cast<int>(e.begin / span * width));
    const int b = std::min(width, std::max(a + 1, static_cast<int>(e.end / span * width)));
    for (int c = a; c < b; ++c) line[static_cast<size_t>(c)] = symbol(e.op);
  }
  const int world = env.world().size, rank = env.world().rank;
  std::vector<double> all(static_cast<size_t>(world) * 6);
  std::vector<char> lines(static_cast<size_t>(world) * width);
  MPI_Gather(sums, 6, MPI_DOUBLE, all.data(), 6, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  MPI_Gather(line.data(), width, MPI_CHAR, lines.data(), width, MPI_CHAR, 0, MPI_COMM_WORLD);
  if (rank != 0) return 0;
  const auto& mesh = env.mesh();
  const int pp = mesh.pp_size(), m = spec.plugin.num_microbatches;
  std::printf("1F1B timeline: ViT (hidden %d, depth %d, image %d, %s) on %s; pp %d, tp %d, dp %d; %d micro-batches "
              "of %d images; mean of %d steps after %d warm-up (ms per step)\n\n",
              cfg.hidden, cfg.depth, cfg.image_size, spec.plugin.precision.c_str(), env.world().describe().c_str(), pp,
              mesh.tp_size(), mesh.dp_size(), m, B / m, spec.benchmark.steps, spec.benchmark.warmup_steps);
  std::printf("| rank | stage | forward | backward | send | recv (incl. waiting) | idle after its last action "
              "| pipeline makespan | rest of step | bubble | 1F1B (pp-1)/(m+pp-1) |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  const double expected = static_cast<double>(pp - 1) / (m + pp - 1);
  for (int r = 0; r < world; ++r) {
    const double* s = all.data() + static_cast<size_t>(r) * 6;
    const double actions = s[0] + s[1] + s[2] + s[3], makespan = s[5];
    const int stage = (r / mesh.tp_size()) % pp;
    std::printf("| %d | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f%% | %.1f%% |\n", r, stage,
                1e3 * s[0], 1e3 * s[1], 1e3 * s[2], 1e3 * s[3], 1e3 * std::max(0.0, makespan - actions),
                1e3 * makespan, 1e3 * (s[4] - makespan), 100.0 * (1.0 - (s[0] + s[1]) / makespan),
                100.0 * expected);
  }
  std::printf("\nlast step, one character = %.2f ms (F forward, B backward, s send, r receive/exchange):\n",
              1e3 * span / width);
  for (int r = 0; r < world; ++r) {
    std::printf("rank %d  %.*s\n", r, width, lines.data() + static_cast<size_t>(r) * width);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return vit::vit_cli_main(argc, argv, run_timeline); }
