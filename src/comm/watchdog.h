// The collective watchdog: a hung rank ends the job instead of hanging it.
//
// Without it, a rank that stops (SIGSTOP, a stuck kernel, a dead node whose
// sockets stay open) leaves every other rank spinning inside its next
// collective forever. With it, every collective a Communicator runs is
// watched by one monitor thread per process:
//   - host-side (MPI) collectives: the calling thread is blocked inside MPI;
//     the monitor sees how long it has been there;
//   - NCCL collectives (GPU builds): an event is recorded on the stream after
//     each one; the monitor polls the oldest pending event, and polls every
//     NCCL communicator for asynchronous errors (ncclCommGetAsyncError).
// When an operation has not completed within `timeout_s`, or NCCL reports an
// error, the monitor of that rank:
//   1. sends a report to every other rank over its own duplicate of the world
//      communicator (non-blocking; a stopped rank simply never answers), and
//      collects for a short grace period the answers of the others: the ranks
//      waiting in a collective too, and the ranks that are alive elsewhere
//      (every monitor answers a report, whatever its main thread does);
//   2. prints one message naming the operation, its communicator's ranks, the
//      phase of the job (the trainer sets "step 12"), the time waited and the
//      ranks that did not arrive (no answer: stopped, hung or dead);
//   3. runs the on_timeout hook (the trainer marks the manifest failed);
//   4. aborts the NCCL communicators (GPU work stops) and calls MPI_Abort, so
//      that every rank exits with a non-zero status (kExitCollectiveTimeout).
// Reports travel from the monitor thread, which needs MPI_THREAD_MULTIPLE;
// with less, the message says that the missing ranks are unknown, and the
// rank exits (std::_Exit), which makes mpirun/srun end the others.
//
// The watchdog is process-wide: communicators find it themselves. Until
// start() (and after stop()) watching costs one relaxed atomic load.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace vit::comm {

// Exit status of every rank after a collective timeout (MPI_Abort's code).
constexpr int kExitCollectiveTimeout = 3;

struct WatchdogOptions {
  double timeout_s = 300;  // an operation not done after this long ends the job; <= 0: no watchdog
  double grace_s = -1;     // how long to collect the other ranks' answers; < 0: clamp(timeout/4, 1, 10)
  double poll_s = -1;      // how often the monitor looks; < 0: clamp(timeout/20, 0.05, 1)
  std::string hint;        // appended to the message (what the user can change)
};

class CollectiveWatchdog {
 public:
  // The one watchdog of this process.
  static CollectiveWatchdog& get();

  // Starts the monitor thread. Collective over `world` (it is duplicated for
  // the reports). Calling start() again while active restarts with the new
  // options (collective again).
  void start(MPI_Comm world, const WatchdogOptions& opts);
  // Stops and joins the monitor and frees the duplicate; call before
  // MPI_Finalize. Not collective.
  void stop();
  bool active() const;
  double timeout_s() const;

  // What the job is doing, named in a timeout message ("step 12", "saving
  // checkpoint step_000012"). Cheap; the trainer calls it every step.
  void set_phase(const std::string& phase);
  // Runs on the monitor thread after a timeout was detected and reported,
  // before the abort. `lowest` is true on the lowest-numbered rank that timed
  // out or answered (the one rank that should write shared files).
  void on_timeout(std::function<void(const std::string& message, bool lowest)> hook);

  // A blocking host-side collective: construct before the MPI call, destroy
  // after it returns (or throws).
  class Scope {
   public:
    Scope() = default;
    ~Scope();
    Scope(Scope&& o) noexcept;
    Scope& operator=(Scope&&) = delete;
    Scope(const Scope&) = delete;

   private:
    friend class CollectiveWatchdog;
    bool armed_ = false;
  };
  // op: "all_reduce", ...; group: the communicator's members as world ranks
  // (must outlive the scope); seq: the communicator's count of operations.
  Scope watch(const char* op, const std::vector<int>* group, uint64_t seq, size_t count, DType dtype);

  // GPU builds: an NCCL operation just enqueued on `stream` of communicator
  // `nccl_comm` (an ncclComm_t). No-op when inactive or in CPU builds.
  void track_gpu(const char* op, const std::vector<int>* group, uint64_t seq, size_t count, DType dtype,
                 void* stream, void* nccl_comm);
  // NCCL communicators register for async-error polling and abort.
  void register_nccl(void* nccl_comm, const std::vector<int>* group);
  void unregister_nccl(void* nccl_comm);

  // "0-3", "0,2,5-7": a compact list of ranks, for messages.
  static std::string describe_ranks(const std::vector<int>& ranks);

  struct Impl;

 private:
  CollectiveWatchdog();
  ~CollectiveWatchdog();
  Impl* impl_;
};

}  // namespace vit::comm
