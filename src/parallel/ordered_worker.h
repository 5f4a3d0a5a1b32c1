// A host thread that runs one list of per-chunk tasks at a time, in the
// order given, while the caller goes on; the caller waits for one chunk's
// task (wait) or for all (wait_all).
//
// gemini hands it the CPU AdamW of its offloaded chunks, in the order the
// next forward needs them, and returns from train_step at once; each gather
// of a chunk waits only for that chunk's update (parallel/gemini.h).
//
// Hold mode (tests): a task runs only once wait() asked for its chunk (or a
// chunk later in the order), so every wait meets a task that has not run:
// a reader that skipped its wait would see the old values every time,
// not only when the thread happened to be slow.
//
// A task that throws stops the list: the tasks after it do not run, and the
// next wait or wait_all rethrows its exception (once).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace vit::parallel {

class OrderedWorker {
 public:
  OrderedWorker();
  // Waits for the list in hand (its errors are dropped), then ends the thread.
  ~OrderedWorker();
  OrderedWorker(const OrderedWorker&) = delete;
  OrderedWorker& operator=(const OrderedWorker&) = delete;

  // Starts task(c) for each c of order (distinct chunk numbers >= 0), one
  // after the other on the worker thread. The previous list must be done
  // (wait_all).
  void start(std::vector<int> order, std::function<void(int c)> task, bool hold = false);
  // True while chunk c is in the list in hand and its task has not finished.
  bool pending(int c) const;
  // Blocks until chunk c's task has run (at once when c is not pending);
  // rethrows the exception of a failed task.
  void wait(int c);
  void wait_all();

 private:
  void run();
  std::ptrdiff_t position(int c) const;  // of c in order_, -1 if absent; mutex held

  mutable std::mutex mutex_;
  std::condition_variable work_, done_;
  std::vector<int> order_;
  std::function<void(int)> task_;
  size_t next_ = 0;      // order_[next_] is the next task to run
  size_t released_ = 0;  // hold mode: tasks before this position may run
  bool hold_ = false, stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;   // last: starts once the members above exist
};

}  // namespace vit::parallel
