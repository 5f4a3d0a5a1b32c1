// OrderedWorker (parallel/ordered_worker.h), gemini's CPU-update thread:
// tasks run in the order given, one at a time, on another thread; wait(c)
// returns once c's task has run (and not before); hold mode runs nothing
// until asked, then exactly the tasks up to the one asked for; a failing
// task stops the list and its exception reaches the next wait, once; the
// destructor waits for a list in hand.
#define BOOST_TEST_MODULE ordered_worker
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "parallel/ordered_worker.h"

using vit::parallel::OrderedWorker;

namespace {

struct Log {
  std::mutex m;
  std::vector<int> order;
  std::thread::id thread;
  void add(int c) {
    std::lock_guard<std::mutex> lock(m);
    order.push_back(c);
    thread = std::this_thread::get_id();
  }
  std::vector<int> seen() {
    std::lock_guard<std::mutex> lock(m);
    return order;
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(runs_in_the_order_given_on_another_thread_and_wait_means_done) {
  OrderedWorker w;
  Log log;
  std::atomic<bool> go{false};
  w.start({5, 3, 4, 0}, [&](int c) {
    while (!go) std::this_thread::yield();  // nothing finishes before the checks below
    log.add(c);
  });
  BOOST_TEST(w.pending(5));
  BOOST_TEST(w.pending(0));
  BOOST_TEST(!w.pending(1));  // not in the list
  go = true;
  w.wait(4);
  const std::vector<int> after4 = log.seen();
  BOOST_TEST_REQUIRE(after4.size() >= 3u);
  BOOST_TEST((std::vector<int>(after4.begin(), after4.begin() + 3) == std::vector<int>{5, 3, 4}));
  BOOST_TEST(!w.pending(4));
  w.wait_all();
  BOOST_TEST((log.seen() == std::vector<int>{5, 3, 4, 0}));
  BOOST_TEST(log.thread != std::this_thread::get_id());
  w.wait(7);  // not in the list: returns at once
  // A second list on the same thread.
  w.start({1, 2}, [&](int c) { log.add(10 + c); });
  w.wait_all();
  BOOST_TEST((log.seen() == std::vector<int>{5, 3, 4, 0, 11, 12}));
}

BOOST_AUTO_TEST_CASE(hold_mode_runs_only_what_was_asked_for) {
  OrderedWorker w;
  Log log;
  w.start({2, 1, 0}, [&](int c) { log.add(c); }, /*hold=*/true);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  BOOST_TEST(log.seen().empty());  // nothing asked for yet
  BOOST_TEST(w.pending(2));
  w.wait(1);  // runs 2, then 1
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  BOOST_TEST((log.seen() == std::vector<int>{2, 1}));
  BOOST_TEST(w.pending(0));
  w.wait_all();
  BOOST_TEST((log.seen() == std::vector<int>{2, 1, 0}));
}

BOOST_AUTO_TEST_CASE(a_failing_task_stops_the_list_and_its_error_reaches_one_wait) {
  OrderedWorker w;
  Log log;
  w.start({0, 1, 2}, [&](int c) {
    if (c == 1) throw std::runtime_error("chunk 1 failed");
    log.add(c);
  });
  BOOST_CHECK_THROW(w.wait(2), std::runtime_error);
  BOOST_TEST((log.seen() == std::vector<int>{0}));  // 2 did not run
  BOOST_CHECK_NO_THROW(w.wait_all());               // reported once
  w.start({3}, [&](int c) { log.add(c); });         // usable again
  w.wait_all();
  BOOST_TEST((log.seen() == std::vector<int>{0, 3}));
}

BOOST_AUTO_TEST_CASE(the_destructor_waits_for_the_list_in_hand_even_when_held) {
  Log log;
  {
    OrderedWorker w;
    w.start({0, 1}, [&](int c) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      log.add(c);
    }, /*hold=*/true);
  }
  BOOST_TEST((log.seen() == std::vector<int>{0, 1}));
}
