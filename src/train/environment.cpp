#include "train/environment.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/rank_agreement.h"
#include "kernels/cpu_threads.h"
#ifdef VIT_WITH_CUDA
#include "kernels/gpu_context.h"
#endif

#ifndef VIT_GIT_REVISION
#define VIT_GIT_REVISION "unknown"
#endif

namespace vit::train {

#ifdef VIT_WITH_CUDA
nlohmann::json gpu_hardware(int device_index);  // environment_cuda.cpp
#endif

bool all_ranks_ok(const std::function<void()>& check) {
  try {
    io::agree_or_throw(check, "error: ");
    return true;
  } catch (const io::AgreedFailure&) {
    return false;
  }
}

namespace {

std::string read_first_match(const char* path, const std::string& key) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "unknown";
}

std::string git_revision() {
  // The revision of the source tree if it is at hand, else the one built from.
  std::string cmd = std::string("git -C '") + VIT_SOURCE_DIR + "' rev-parse --short=12 HEAD 2>/dev/null";
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    char buf[64] = {0};
    const bool got = std::fgets(buf, sizeof buf, p) != nullptr;
    ::pclose(p);
    std::string rev(buf);
    while (!rev.empty() && (rev.back() == '\n' || rev.back() == '\r')) rev.pop_back();
    if (got && !rev.empty()) return rev;
  }
  return VIT_GIT_REVISION;
}

}  // namespace

RunEnvironment::RunEnvironment(const ExperimentSpec& spec) : spec_(spec) {
  world_ = comm::bootstrap_world(spec.run.device);
  // Threads: the node's cores shared among its ranks, unless the spec says.
  int threads = spec.run.cpu_threads;
  if (threads <= 0) {
    const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
    threads = static_cast<int>(std::max(1L, cores / std::max(1, world_.local_size)));
  }
  kernels::set_cpu_threads(threads);
  ctx_.device = world_.device();
#ifdef VIT_WITH_CUDA
  if (world_.use_gpu) {
    auto rt = std::make_shared<GpuRuntime>(world_.gpu_index, spec.plugin.tf32);
    ctx_ = rt->context();
    gpu_ = rt;
  }
#endif
  mesh_ = std::make_unique<comm::ProcessMesh>(MPI_COMM_WORLD, world_, spec.plugin.tp_size, spec.plugin.pp_size);
}

RunEnvironment::~RunEnvironment() = default;

size_t RunEnvironment::peak_memory() const {
  if (ctx_.device == Device::CUDA) return memory_stats(Device::CUDA).peak_bytes;
  return peak_resident_bytes();
}

nlohmann::json RunEnvironment::hardware() const {
  nlohmann::json hw;
  hw["host"] = world_.hostname;
  hw["cpu"] = read_first_match("/proc/cpuinfo", "model name");
  hw["cpu_threads"] = kernels::cpu_threads();
#ifdef VIT_WITH_CUDA
  if (gpu_) hw.update(gpu_hardware(world_.gpu_index));
#endif
  return hw;
}

void RunEnvironment::open_results(const std::string& mode, const std::string& plugin, int64_t global_batch,
                                  const std::string& plugin_variant) {
  // The folder was claimed (created) by run_experiment. The manifest comes
  // first, so a run folder never holds rank files without one; a failure to
  // write it (a full disk) stops every rank together.
  results_dir_ = spec_.run.output_dir + "/" + spec_.run.name;
  io::agree_or_throw([&] { write_manifest(mode, plugin, global_batch, plugin_variant); }, "error: ", 1);
  io::agree_or_throw(
      [&] { metrics_ = io::JsonlWriter(results_dir_ + "/rank_" + std::to_string(world_.rank) + ".jsonl"); },
      "error: ", 1);
}

void RunEnvironment::write_manifest(const std::string& mode, const std::string& plugin, int64_t global_batch,
                                    const std::string& plugin_variant) {
  if (!is_rank0()) return;
  manifest_ = nlohmann::json::object();
  manifest_["format"] = 1;
  manifest_["run"] = spec_.run.name;
  manifest_["mode"] = mode;
  manifest_["status"] = "running";
  manifest_["spec"] = spec_to_json(spec_);
  auto& m = *mesh_;
  manifest_["world"] = {{"size", world_.size},
                        {"dp", m.dp_size()},
                        {"tp", m.tp_size()},
                        {"pp", m.pp_size()},
                        {"nodes", world_.nodes},
                        {"ranks_per_node", world_.local_size},
                        {"device", device_name(world_.device())},
                        {"communicator", m.dp_comm().backend()},
                        {"describe", world_.describe()}};
  manifest_["plugin"] = plugin;
  if (!plugin_variant.empty()) manifest_["plugin_variant"] = plugin_variant;
  manifest_["precision"] = spec_.plugin.precision;
  manifest_["global_batch"] = global_batch;
  manifest_["hardware"] = hardware();
  manifest_["git_revision"] = git_revision();
  manifest_["start_time"] = io::iso_time_now();
  manifest_["end_time"] = nullptr;
  io::write_json_atomic(results_dir_ + "/manifest.json", manifest_);
}

void RunEnvironment::close_results(bool ok, const std::string& error) {
  auto write = [&] {
    // Once closed, the manifest's word is final (a failure after a completed
    // run, such as a failed export, is already in its "error").
    if (!is_rank0() || results_dir_.empty() || manifest_.is_null() || closed_) return;
    manifest_["status"] = ok ? "completed" : "failed";
    if (!error.empty()) manifest_["error"] = error;
    manifest_["end_time"] = io::iso_time_now();
    io::write_json_atomic(results_dir_ + "/manifest.json", manifest_);
    closed_ = true;
  };
  if (!ok) return write();  // on an error path: this rank alone
  io::agree_or_throw(write, "error: ", 1);
}

}  // namespace vit::train
