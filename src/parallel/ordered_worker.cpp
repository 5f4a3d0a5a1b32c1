#include "parallel/ordered_worker.h"

#include <algorithm>
#include <utility>

#include "core/error.h"

namespace vit::parallel {

OrderedWorker::OrderedWorker() : thread_([this] { run(); }) {}

OrderedWorker::~OrderedWorker() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    released_ = order_.size();  // hold mode: let the rest run
    work_.notify_all();
    done_.wait(lock, [&] { return next_ >= order_.size(); });
    stop_ = true;
  }
  work_.notify_all();
  thread_.join();
}

std::ptrdiff_t OrderedWorker::position(int c) const {
  const auto it = std::find(order_.begin(), order_.end(), c);
  return it == order_.end() ? -1 : it - order_.begin();
}

void OrderedWorker::start(std::vector<int> order, std::function<void(int)> task, bool hold) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    VIT_CHECK(next_ >= order_.size(), "OrderedWorker: a new list while ", order_.size() - next_,
              " task(s) of the last one have not run");
    VIT_CHECK(!error_, "OrderedWorker: a new list before the last one's error was collected");
    order_ = std::move(order);
    task_ = std::move(task);
    next_ = 0;
    released_ = 0;
    hold_ = hold;
  }
  work_.notify_all();
}

bool OrderedWorker::pending(int c) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::ptrdiff_t p = position(c);
  return p >= 0 && static_cast<size_t>(p) >= next_;
}

void OrderedWorker::wait(int c) {
  std::unique_lock<std::mutex> lock(mutex_);
  const std::ptrdiff_t p = position(c);
  if (p >= 0) {
    released_ = std::max(released_, static_cast<size_t>(p) + 1);
    work_.notify_all();
    done_.wait(lock, [&] { return next_ > static_cast<size_t>(p); });
  }
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void OrderedWorker::wait_all() {
  std::unique_lock<std::mutex> lock(mutex_);
  released_ = order_.size();
  work_.notify_all();
  done_.wait(lock, [&] { return next_ >= order_.size(); });
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void OrderedWorker::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_.wait(lock, [&] { return stop_ || (next_ < order_.size() && (!hold_ || next_ < released_)); });
    if (stop_) return;
    const int c = order_[next_];
    lock.unlock();
    std::exception_ptr failed;
    try {
      task_(c);
    } catch (...) {
      failed = std::current_exception();
    }
    lock.lock();
    if (failed) {
      error_ = failed;
      next_ = order_.size();  // the rest of the list is dropped
    } else {
      ++next_;
    }
    done_.notify_all();
  }
}

}  // namespace vit::parallel
