#include "train/environment.h"

#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "comm/watchdog.h"
#include "core/device.h"
#include "core/error.h"
#include "io/rank_agreement.h"
#include "io/run_liveness.h"
#include "kernels/blas_core.h"
#include "kernels/cpu_threads.h"
#ifdef VIT_WITH_CUDA
#include "kernels/gpu_context.h"
#endif

#include "vit_git_revision.h"  // generated: VIT_GIT_REVISION

namespace vit::train {

#ifdef VIT_WITH_CUDA
nlohmann::json gpu_hardware(int device_index);  // environment_cuda.cpp
std::string gpu_pci_bus_id(int device_index);     // environment_cuda.cpp
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

// The revision the binary was built from (refreshed at every build; see
// src/train/git_revision.cmake), not the source tree's current one.
std::string git_revision() { return VIT_GIT_REVISION; }

}  // namespace

std::string gemm_tuning_cache_path(const ExperimentSpec& spec) {
  const std::string& c = spec.plugin.gemm_tuning_cache;
  if (c != "auto") return c;
  return (spec.run.output_dir.empty() ? std::string(".") : spec.run.output_dir) + "/gemm_tuning.tsv";
}

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
    // gemini's CPU AdamW runs on every core while the GPU computes; the main
    // thread's waits for the GPU then sleep rather than spin on one of them.
    if (spec.plugin.name == "gemini" && spec.plugin.offload_optim_frac > 0) set_gpu_blocking_waits();
    auto rt = std::make_shared<GpuRuntime>(world_.gpu_index, spec.plugin.tf32);
    rt->set_sdpa_deterministic(spec.model.attention_deterministic);
    rt->set_attention_backward_short(spec.model.attention_backward != "cudnn");
    rt->set_attention_backward_wgmma(spec.model.attention_backward == "auto");
    rt->set_attention_forward_wgmma(spec.model.attention_forward == "auto");
    rt->set_gemm_autotune(spec.plugin.gemm_autotune);
    rt->set_gemm_autotune_wide(spec.plugin.gemm_autotune_wide);
    if (spec.plugin.gemm_autotune) rt->set_gemm_tuning_cache(gemm_tuning_cache_path(spec));
    ctx_ = rt->context();
    gpu_ = rt;
  }
#endif
  mesh_ = std::make_unique<comm::ProcessMesh>(MPI_COMM_WORLD, world_, spec.plugin.tp_size, spec.plugin.pp_size);

  // From here on a rank that never arrives in a collective ends the job.
  comm::CollectiveWatchdog& watchdog = comm::CollectiveWatchdog::get();
  watchdog.on_timeout([this](const std::string& message, bool lowest) {
    // The lowest rank that saw the timeout marks the run failed, reading the
    // manifest from the shared folder when it is not rank 0 (which may be
    // the rank that hangs).
    if (!lowest) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (results_dir_.empty() || closed_) return;
    closed_ = true;
    nlohmann::json m = manifest_;
    if (!is_rank0()) {
      std::ifstream in(results_dir_ + "/manifest.json");
      if (!in) return;
      in >> m;
    }
    m["status"] = "failed";
    m["error"] = message;
    m["end_time"] = io::iso_time_now();
    io::write_json_atomic(results_dir_ + "/manifest.json", m);
  });
  comm::WatchdogOptions wo;
  wo.timeout_s = spec.run.collective_timeout_s;
  wo.hint = "raise run.collective_timeout_s if an operation may legitimately take longer";
  watchdog.start(MPI_COMM_WORLD, wo);
}

RunEnvironment::~RunEnvironment() {
  stop_heartbeat();
  comm::CollectiveWatchdog::get().stop();
  comm::CollectiveWatchdog::get().on_timeout(nullptr);
}

void RunEnvironment::write_manifest() { io::write_json_atomic(results_dir_ + "/manifest.json", manifest_); }

void RunEnvironment::stop_heartbeat() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    heartbeat_stop_ = true;
  }
  heartbeat_cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
}

size_t RunEnvironment::peak_memory() const {
  if (ctx_.device == Device::CUDA) return memory_stats(Device::CUDA).peak_bytes;
  return peak_resident_bytes();
}

std::string RunEnvironment::gpu_bus_id() const {
#ifdef VIT_WITH_CUDA
  if (gpu_) return gpu_pci_bus_id(world_.gpu_index);
#endif
  return "";
}

nlohmann::json RunEnvironment::hardware() const {
  nlohmann::json hw;
  hw["host"] = world_.hostname;
  hw["cpu"] = read_first_match("/proc/cpuinfo", "model name");
  hw["cpu_threads"] = kernels::cpu_threads();
  hw["blas_core"] = kernels::blas_core();  // OpenBLAS kernels of the CPU path
#ifdef VIT_WITH_CUDA
  if (gpu_) hw.update(gpu_hardware(world_.gpu_index));
#endif
  return hw;
}

void RunEnvironment::open_results(const std::string& mode, const std::string& plugin, int64_t global_batch,
                                  const std::string& plugin_variant, const ResultsResume* resume) {
  results_dir_ = spec_.run.output_dir + "/" + spec_.run.name;
  if (is_rank0()) io::make_dirs(results_dir_);
  MPI_Barrier(MPI_COMM_WORLD);
  // Every rank's host and pid, so that a dead run can be told from a live one.
  struct HostPid {
    char host[120];
    int64_t pid;
  } mine{}, none{};
  std::strncpy(mine.host, world_.hostname.c_str(), sizeof mine.host - 1);
  mine.pid = static_cast<int64_t>(::getpid());
  std::vector<HostPid> all(static_cast<size_t>(world_.size), none);
  const int err = MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, MPI_COMM_WORLD);
  VIT_CHECK(err == MPI_SUCCESS, "MPI_Allgather of host names and pids failed on rank ", world_.rank);
  // The manifest first (rank 0), then every rank's metrics file; a failure
  // to write either (a full disk) stops every rank together.
  io::agree_or_throw(
      [&] {
        if (!is_rank0()) return;
    nlohmann::json previous;
    if (resume && resume->same_folder) {
      std::ifstream in(results_dir_ + "/manifest.json");
      try {
        if (in) in >> previous;
      } catch (const std::exception&) {
        previous = nlohmann::json();
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
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
    const bool continued = previous.is_object() && previous.contains("start_time");
    manifest_["start_time"] = continued ? previous["start_time"] : nlohmann::json(io::iso_time_now());
    manifest_["end_time"] = nullptr;
    manifest_["host"] = world_.hostname;
    manifest_["pid"] = static_cast<int64_t>(::getpid());
    nlohmann::json ranks = nlohmann::json::array();
    for (const HostPid& hp : all) ranks.push_back({{"host", std::string(hp.host)}, {"pid", hp.pid}});
    manifest_["ranks"] = ranks;
    manifest_["heartbeat"] = io::iso_time_now();
    manifest_["heartbeat_interval_s"] = io::kHeartbeatSeconds;
    if (resume) {
      nlohmann::json resumes = continued && previous.contains("resumes") ? previous["resumes"] : nlohmann::json::array();
      resumes.push_back({{"time", io::iso_time_now()},
                         {"from_step", resume->step},
                         {"checkpoint", resume->checkpoint},
                         {"checkpoint_plugin", resume->plugin},
                         {"checkpoint_world_size", resume->world_size},
                         {"same_folder", resume->same_folder}});
      manifest_["resumes"] = resumes;
    }
    closed_ = false;
    heartbeat_stop_ = false;
    write_manifest();
      },
      "error: ", 1);
  io::agree_or_throw(
      [&] {
      const std::string rank_file = results_dir_ + "/rank_" + std::to_string(world_.rank) + ".jsonl";
      if (resume && resume->same_folder) {
        VIT_CHECK(resume->keep_bytes.size() == static_cast<size_t>(world_.size), "resume: ", resume->keep_bytes.size(),
                  " metrics offsets for ", world_.size, " ranks");
        metrics_ = io::JsonlWriter(rank_file, resume->keep_bytes[static_cast<size_t>(world_.rank)]);
      } else {
        metrics_ = io::JsonlWriter(rank_file);
      }
      },
      "error: ", 1);
  if (!is_rank0()) return;
  heartbeat_ = std::thread([this] {
    std::unique_lock<std::mutex> hb(mu_);
    for (;;) {
      heartbeat_cv_.wait_for(hb, std::chrono::duration<double>(io::kHeartbeatSeconds),
                             [&] { return closed_ || heartbeat_stop_; });
      if (closed_ || heartbeat_stop_) return;
      manifest_["heartbeat"] = io::iso_time_now();
      try {
        write_manifest();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "vit_hpc: warning: heartbeat: %s\n", e.what());
      }
    }
  });
}

void RunEnvironment::save_gemm_tuning() {
#ifdef VIT_WITH_CUDA
  if (!gpu_) return;
  try {
    static_cast<GpuRuntime*>(gpu_.get())->save_gemm_tuning_cache();
  } catch (const UserError& e) {
    if (!tuning_save_warned_) {
      std::fprintf(stderr, "vit_hpc: warning: rank %d: %s; the run goes on, the tuning is not saved\n", world_.rank,
                   e.what());
    }
    tuning_save_warned_ = true;
  }
#endif
}

void RunEnvironment::close_results(bool ok, const std::string& error) {
  if (ok) save_gemm_tuning();
  stop_heartbeat();
  auto write = [&] {
    // Once closed, the manifest's word is final (a failure after a completed
    // run, such as a failed export, is already in its "error").
    if (!is_rank0() || results_dir_.empty()) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_ || manifest_.is_null()) return;
    manifest_["status"] = ok ? "completed" : "failed";
    if (!error.empty()) manifest_["error"] = error;
    manifest_["end_time"] = io::iso_time_now();
    manifest_["heartbeat"] = manifest_["end_time"];
    write_manifest();
    closed_ = true;
  };
  if (!ok) return write();  // on an error path: this rank alone
  io::agree_or_throw(write, "error: ", 1);
}

void RunEnvironment::close_results_interrupted(const std::string& reason, int64_t step,
                                               const std::string& checkpoint) {
  stop_heartbeat();
  if (!is_rank0() || results_dir_.empty()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) return;
  closed_ = true;
  manifest_["status"] = "interrupted";
  manifest_["interrupted"] = {{"by", reason}, {"step", step}, {"checkpoint", checkpoint}};
  manifest_["end_time"] = io::iso_time_now();
  manifest_["heartbeat"] = manifest_["end_time"];
  write_manifest();
}

}  // namespace vit::train
