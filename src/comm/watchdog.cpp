// The collective watchdog (see watchdog.h).
#include "comm/watchdog.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "comm/watchdog_gpu.h"
#include "core/error.h"

namespace vit::comm {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::atomic<bool> g_active{false};

constexpr int kReportTag = 7331;  // on the watchdog's own duplicate of the world

// What one monitor tells the others, as plain bytes (every rank runs the
// same binary).
struct Report {
  enum Kind : int32_t { Timeout = 1, Status = 2 };
  int32_t kind = 0;
  int32_t rank = -1;
  int32_t in_collective = 0;  // Status: the main thread is inside a collective now
  int32_t pad = 0;
  uint64_t seq = 0;
  double waited_s = 0;        // how long it has been in that collective
  char op[32] = {};
  char phase[96] = {};
};

void copy_text(char* dst, size_t cap, const std::string& src) {
  std::strncpy(dst, src.c_str(), cap - 1);
  dst[cap - 1] = '\0';
}

std::string fmt_seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, s < 10 ? "%.1f s" : "%.0f s", s);
  return buf;
}

}  // namespace

#ifndef VIT_WITH_CUDA
namespace detail {
std::unique_ptr<GpuWatch> make_gpu_watch() { return nullptr; }
}  // namespace detail
#endif

struct CollectiveWatchdog::Impl {
  std::mutex mu;
  // The host-side collective in flight (one at a time: only the main thread
  // calls MPI collectives).
  bool in_flight = false;
  const char* op = "";
  const std::vector<int>* group = nullptr;
  uint64_t seq = 0;
  size_t count = 0;
  DType dtype = DType::F32;
  Clock::time_point since;
  std::string phase = "setup";
  std::function<void(const std::string&, bool)> hook;

  WatchdogOptions opts;
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  bool thread_multiple = false;
  std::unique_ptr<detail::GpuWatch> gpu;
  std::map<int, Report> heard;  // the latest report of each peer

  std::thread thread;
  std::condition_variable cv;
  bool stopping = false;
  bool fired = false;

  void monitor();
  void service_reports();
  Report my_status();
  [[noreturn]] void fire(const std::string& what, const char* op_name, const std::vector<int>* members,
                         uint64_t op_seq, double waited);
};

CollectiveWatchdog& CollectiveWatchdog::get() {
  static CollectiveWatchdog instance;
  return instance;
}

CollectiveWatchdog::CollectiveWatchdog() : impl_(new Impl) {}
CollectiveWatchdog::~CollectiveWatchdog() {
  // Static destruction: never join here (MPI may be finalised); stop() did.
  if (impl_->thread.joinable()) impl_->thread.detach();
}

bool CollectiveWatchdog::active() const { return g_active.load(std::memory_order_relaxed); }

double CollectiveWatchdog::timeout_s() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->opts.timeout_s;
}

void CollectiveWatchdog::start(MPI_Comm world, const WatchdogOptions& opts) {
  stop();
  if (opts.timeout_s <= 0) return;
  Impl& s = *impl_;
  MPI_Comm dup = MPI_COMM_NULL;
  VIT_CHECK(MPI_Comm_dup(world, &dup) == MPI_SUCCESS, "MPI_Comm_dup for the collective watchdog failed");
  MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.opts = opts;
    if (s.opts.grace_s < 0) s.opts.grace_s = std::clamp(opts.timeout_s / 4, 1.0, 10.0);
    if (s.opts.poll_s < 0) s.opts.poll_s = std::clamp(opts.timeout_s / 20, 0.05, 1.0);
    s.comm = dup;
    MPI_Comm_rank(dup, &s.rank);
    MPI_Comm_size(dup, &s.size);
    s.thread_multiple = provided >= MPI_THREAD_MULTIPLE;
    s.stopping = false;
    s.fired = false;
    s.in_flight = false;
    s.heard.clear();
    if (!s.gpu) s.gpu = detail::make_gpu_watch();
  }
  g_active.store(true);
  s.thread = std::thread([&s] { s.monitor(); });
}

void CollectiveWatchdog::stop() {
  Impl& s = *impl_;
  g_active.store(false);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.stopping = true;
  }
  s.cv.notify_all();
  if (s.thread.joinable()) s.thread.join();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.comm != MPI_COMM_NULL) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&s.comm);
    s.comm = MPI_COMM_NULL;
  }
}

void CollectiveWatchdog::set_phase(const std::string& phase) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->phase = phase;
}

void CollectiveWatchdog::on_timeout(std::function<void(const std::string&, bool)> hook) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->hook = std::move(hook);
}

CollectiveWatchdog::Scope CollectiveWatchdog::watch(const char* op, const std::vector<int>* group, uint64_t seq,
                                                    size_t count, DType dtype) {
  Scope scope;
  if (!g_active.load(std::memory_order_relaxed)) return scope;
  std::lock_guard<std::mutex> lock(impl_->mu);
  Impl& s = *impl_;
  s.in_flight = true;
  s.op = op;
  s.group = group;
  s.seq = seq;
  s.count = count;
  s.dtype = dtype;
  s.since = Clock::now();
  scope.armed_ = true;
  return scope;
}

CollectiveWatchdog::Scope::~Scope() {
  if (!armed_) return;
  Impl& s = *CollectiveWatchdog::get().impl_;
  std::lock_guard<std::mutex> lock(s.mu);
  s.in_flight = false;
}

CollectiveWatchdog::Scope::Scope(Scope&& o) noexcept : armed_(o.armed_) { o.armed_ = false; }

void CollectiveWatchdog::track_gpu(const char* op, const std::vector<int>* group, uint64_t seq, size_t count,
                                   DType dtype, void* stream, void* nccl_comm) {
  if (!g_active.load(std::memory_order_relaxed) || !impl_->gpu) return;
  detail::GpuPending p;
  p.op = op;
  p.group = group;
  p.seq = seq;
  p.count = count;
  p.dtype = dtype;
  p.since = Clock::now();
  impl_->gpu->enqueued(p, stream, nccl_comm);
}

void CollectiveWatchdog::register_nccl(void* nccl_comm, const std::vector<int>* group) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->gpu) impl_->gpu = detail::make_gpu_watch();
  if (impl_->gpu) impl_->gpu->register_comm(nccl_comm, group);
}

void CollectiveWatchdog::unregister_nccl(void* nccl_comm) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->gpu) impl_->gpu->unregister_comm(nccl_comm);
}

std::string CollectiveWatchdog::describe_ranks(const std::vector<int>& ranks) {
  std::vector<int> r = ranks;
  std::sort(r.begin(), r.end());
  r.erase(std::unique(r.begin(), r.end()), r.end());
  std::string out;
  for (size_t i = 0; i < r.size();) {
    size_t j = i;
    while (j + 1 < r.size() && r[j + 1] == r[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += j == i ? std::to_string(r[i]) : str_cat(r[i], j == i + 1 ? "," : "-", r[j]);
    i = j + 1;
  }
  return out;
}

// ---------------------------------------------------------------------------
// The monitor thread
// ---------------------------------------------------------------------------

Report CollectiveWatchdog::Impl::my_status() {
  Report r;
  r.kind = Report::Status;
  r.rank = rank;
  std::lock_guard<std::mutex> lock(mu);
  copy_text(r.phase, sizeof r.phase, phase);
  if (in_flight) {
    r.in_collective = 1;
    r.seq = seq;
    r.waited_s = seconds_since(since);
    copy_text(r.op, sizeof r.op, op);
  }
  return r;
}

// Answers the reports of ranks that timed out with what this rank is doing,
// and remembers them.
void CollectiveWatchdog::Impl::service_reports() {
  for (;;) {
    int flag = 0;
    MPI_Status st;
    if (MPI_Iprobe(MPI_ANY_SOURCE, kReportTag, comm, &flag, &st) != MPI_SUCCESS || !flag) return;
    Report r;
    if (MPI_Recv(&r, sizeof r, MPI_BYTE, st.MPI_SOURCE, kReportTag, comm, MPI_STATUS_IGNORE) != MPI_SUCCESS) return;
    heard[r.rank] = r;
    if (r.kind == Report::Timeout && !fired) {
      static Report answer;  // lives until the job ends: the send is never waited for
      answer = my_status();
      MPI_Request req;
      if (MPI_Isend(&answer, sizeof answer, MPI_BYTE, r.rank, kReportTag, comm, &req) == MPI_SUCCESS) {
        MPI_Request_free(&req);
      }
    }
  }
}

void CollectiveWatchdog::Impl::monitor() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, std::chrono::duration<double>(opts.poll_s), [&] { return stopping; });
      if (stopping) return;
    }
    if (thread_multiple) service_reports();
    const char* host_op = nullptr;
    const std::vector<int>* host_group = nullptr;
    uint64_t host_seq = 0;
    double host_waited = 0;
    std::string host_what;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (in_flight && seconds_since(since) > opts.timeout_s) {
        host_op = op;
        host_group = group;
        host_seq = seq;
        host_waited = seconds_since(since);
        host_what = str_cat(op, " #", seq, " (", count, " x ", dtype_name(dtype), ")");
      }
    }
    if (host_op != nullptr) fire(host_what, host_op, host_group, host_seq, host_waited);
    if (gpu) {
      const std::string err = gpu->async_error();
      if (!err.empty()) fire(err, "nccl", nullptr, 0, 0);
      detail::GpuPending p;
      if (gpu->oldest_pending(&p) && seconds_since(p.since) > opts.timeout_s) {
        fire(str_cat("NCCL ", p.op, " #", p.seq, " (", p.count, " x ", dtype_name(p.dtype), ")"), p.op, p.group,
             p.seq, seconds_since(p.since));
      }
    }
  }
}

void CollectiveWatchdog::Impl::fire(const std::string& what, const char* op_name, const std::vector<int>* members,
                                    uint64_t op_seq, double waited) {
  std::string phase_now;
  std::function<void(const std::string&, bool)> hook_now;
  {
    std::lock_guard<std::mutex> lock(mu);
    fired = true;
    phase_now = phase;
    hook_now = hook;
  }
  std::vector<int> group_ranks;
  if (members != nullptr) {
    group_ranks = *members;
  } else {
    for (int r = 0; r < size; ++r) group_ranks.push_back(r);
  }

  // 1. Tell everyone, then listen for a while. The sends are never waited
  // for (a stopped peer never receives), so their buffer lives on.
  static Report mine;
  mine.kind = Report::Timeout;
  mine.rank = rank;
  mine.seq = op_seq;
  mine.waited_s = waited;
  mine.in_collective = 1;
  copy_text(mine.op, sizeof mine.op, op_name);
  copy_text(mine.phase, sizeof mine.phase, phase_now);
  if (thread_multiple) {
    for (int peer = 0; peer < size; ++peer) {
      if (peer == rank) continue;
      MPI_Request req;
      if (MPI_Isend(&mine, sizeof mine, MPI_BYTE, peer, kReportTag, comm, &req) == MPI_SUCCESS) {
        MPI_Request_free(&req);
      }
    }
    const auto deadline = Clock::now() + std::chrono::duration<double>(opts.grace_s);
    while (Clock::now() < deadline) {
      service_reports();
      bool all = true;
      for (int r : group_ranks) all = all && (r == rank || heard.count(r));
      if (all) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  // 2. Who is where.
  std::vector<int> missing, waiting, elsewhere;
  std::string elsewhere_text;
  int lowest = rank;
  for (const auto& [r, rep] : heard) lowest = std::min(lowest, r);
  for (int r : group_ranks) {
    if (r == rank) continue;
    const auto it = heard.find(r);
    if (it == heard.end()) {
      missing.push_back(r);
      continue;
    }
    const Report& rep = it->second;
    const bool same = rep.kind == Report::Timeout || (rep.in_collective && std::strcmp(rep.op, op_name) == 0 &&
                                                      rep.seq == op_seq);
    if (same) {
      waiting.push_back(r);
    } else {
      elsewhere.push_back(r);
      elsewhere_text += str_cat(elsewhere_text.empty() ? "" : "; ", "rank ", r, " at ", rep.phase,
                                rep.in_collective ? str_cat(", in ", rep.op, " #", rep.seq, " for ",
                                                            fmt_seconds(rep.waited_s))
                                                  : std::string(", not in a collective"));
    }
  }
  std::string message = str_cat("collective timeout on rank ", rank, ": ", what);
  if (members != nullptr) message += str_cat(" over ranks ", CollectiveWatchdog::describe_ranks(group_ranks));
  message += str_cat(" at ", phase_now, waited > 0 ? str_cat(" did not complete within ", fmt_seconds(waited)) : "");
  if (!thread_multiple) {
    message += "; the ranks that did not arrive are unknown (MPI without MPI_THREAD_MULTIPLE cannot ask them)";
  } else {
    message += missing.empty() ? std::string("; every rank answered")
                               : str_cat("; did not arrive: rank", missing.size() > 1 ? "s " : " ",
                                         CollectiveWatchdog::describe_ranks(missing),
                                         " (no answer: stopped, hung or dead)");
    if (!elsewhere.empty()) message += str_cat("; alive elsewhere: ", elsewhere_text);
    if (!waiting.empty()) message += str_cat("; waiting in it too: ", CollectiveWatchdog::describe_ranks(waiting));
  }
  message += str_cat(". Every rank ends now (exit status ", kExitCollectiveTimeout, ")");
  if (!opts.hint.empty()) message += str_cat("; ", opts.hint);
  if (lowest == rank) {
    std::fprintf(stderr, "vit_hpc: %s\n", message.c_str());
  } else {
    std::fprintf(stderr, "vit_hpc: rank %d: collective timeout too (%s at %s); rank %d reports the details\n", rank,
                 what.c_str(), phase_now.c_str(), lowest);
  }
  std::fflush(stderr);

  // 3. The caller's hook (the manifest), then 4. end everything.
  if (hook_now) {
    try {
      hook_now(message, lowest == rank);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "vit_hpc: rank %d: after the timeout: %s\n", rank, e.what());
    }
  }
  if (gpu) gpu->abort_all();
  std::fflush(stdout);
  std::fflush(stderr);
  if (thread_multiple) MPI_Abort(MPI_COMM_WORLD, kExitCollectiveTimeout);
  std::_Exit(kExitCollectiveTimeout);
}

}  // namespace vit::comm
