// The 1F1B schedule (parallel/pipeline_schedule.h) run by a simulator of S
// stages, without ranks: every communication half (a send or a receive)
// waits until the neighbour's current action holds the matching half, as a
// rendezvous send (the strictest MPI and NCCL behaviour) does. The
// simulation must finish (no deadlock) with every send met by the receive
// of the same micro-batch and direction; each stage must run every
// micro-batch's forward and backward once, in order, the backward after the
// forward, hold at most S - s micro-batches alive (what the model's slots
// allow), and keep to its phases (warm-up: forwards only; cool-down:
// backwards only; steady: one forward, one backward per round).
#define BOOST_TEST_MODULE pipeline_schedule
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "parallel/pipeline_schedule.h"

using namespace vit::parallel;

namespace {

enum class Dir { Activation, Gradient };

struct Half {
  bool send = false;
  int peer = -1;  // stage
  Dir dir = Dir::Activation;
  int micro = -1;
  bool done = false;
};

// The communication halves of one action of stage s.
std::vector<Half> halves_of(const PipeAction& a, int s) {
  using A = PipeAction;
  switch (a.op) {
    case A::RecvForward: return {Half{false, s - 1, Dir::Activation, a.micro}};
    case A::SendForward: return {Half{true, s + 1, Dir::Activation, a.micro}};
    case A::SendForwardRecvBackward:
      return {Half{true, s + 1, Dir::Activation, a.micro}, Half{false, s + 1, Dir::Gradient, a.other}};
    case A::RecvBackward: return {Half{false, s + 1, Dir::Gradient, a.micro}};
    case A::SendBackward: return {Half{true, s - 1, Dir::Gradient, a.micro}};
    case A::SendBackwardRecvForward:
      return {Half{true, s - 1, Dir::Gradient, a.micro}, Half{false, s - 1, Dir::Activation, a.other}};
    case A::Forward:
    case A::Backward: return {};
  }
  return {};
}

struct Outcome {
  bool finished = false;
  std::string problem;                       // first violation seen, empty if none
  std::vector<int> max_alive;                // per stage
  std::vector<std::vector<int>> forwards, backwards;  // order of computation per stage
};

Outcome simulate(int S, int M) {
  std::vector<std::vector<PipeAction>> plans;
  for (int s = 0; s < S; ++s) plans.push_back(one_f_one_b(S, s, M));
  std::vector<size_t> pc(static_cast<size_t>(S), 0);
  std::vector<std::vector<Half>> pending(static_cast<size_t>(S));
  std::vector<bool> loaded(static_cast<size_t>(S), false);
  std::vector<int> alive(static_cast<size_t>(S), 0);
  Outcome out;
  out.max_alive.assign(static_cast<size_t>(S), 0);
  out.forwards.resize(static_cast<size_t>(S));
  out.backwards.resize(static_cast<size_t>(S));
  auto fail = [&](const std::string& what) {
    if (out.problem.empty()) out.problem = what;
  };
  for (int guard = 0; guard < 100000; ++guard) {
    bool progress = false, all_done = true;
    // Compute actions run at once; a communication action loads its halves.
    for (int s = 0; s < S; ++s) {
      auto& plan = plans[static_cast<size_t>(s)];
      size_t& p = pc[static_cast<size_t>(s)];
      while (p < plan.size() && !loaded[static_cast<size_t>(s)]) {
        const PipeAction& a = plan[p];
        if (a.op == PipeAction::Forward) {
          out.forwards[static_cast<size_t>(s)].push_back(a.micro);
          int& n = alive[static_cast<size_t>(s)];
          ++n;
          out.max_alive[static_cast<size_t>(s)] = std::max(out.max_alive[static_cast<size_t>(s)], n);
          if (a.phase == PipePhase::CoolDown) fail("a forward in the cool-down");
          ++p;
          progress = true;
        } else if (a.op == PipeAction::Backward) {
          const auto& f = out.forwards[static_cast<size_t>(s)];
          if (std::find(f.begin(), f.end(), a.micro) == f.end()) {
            fail("stage " + std::to_string(s) + " runs backward of micro-batch " + std::to_string(a.micro) +
                 " before its forward");
          }
          out.backwards[static_cast<size_t>(s)].push_back(a.micro);
          --alive[static_cast<size_t>(s)];
          if (a.phase == PipePhase::WarmUp) fail("a backward in the warm-up");
          ++p;
          progress = true;
        } else {
          pending[static_cast<size_t>(s)] = halves_of(a, s);
          for (const Half& h : pending[static_cast<size_t>(s)]) {
            if (h.peer < 0 || h.peer >= S) fail("stage " + std::to_string(s) + " talks to missing stage " +
                                                std::to_string(h.peer));
          }
          loaded[static_cast<size_t>(s)] = true;
        }
      }
    }
    // Match a send half with the peer's receive half of the current action.
    for (int s = 0; s < S; ++s) {
      for (Half& h : pending[static_cast<size_t>(s)]) {
        if (h.done || !h.send || h.peer < 0 || h.peer >= S) continue;
        for (Half& r : pending[static_cast<size_t>(h.peer)]) {
          if (r.done || r.send || r.peer != s || r.dir != h.dir) continue;
          if (r.micro != h.micro) {
            fail("stage " + std::to_string(s) + " sends micro-batch " + std::to_string(h.micro) + " where stage " +
                 std::to_string(h.peer) + " receives micro-batch " + std::to_string(r.micro));
          }
          h.done = r.done = true;
          progress = true;
          break;
        }
      }
    }
    for (int s = 0; s < S; ++s) {
      auto& hs = pending[static_cast<size_t>(s)];
      if (loaded[static_cast<size_t>(s)] &&
          std::all_of(hs.begin(), hs.end(), [](const Half& h) { return h.done; })) {
        hs.clear();
        loaded[static_cast<size_t>(s)] = false;
        ++pc[static_cast<size_t>(s)];
        progress = true;
      }
      if (pc[static_cast<size_t>(s)] < plans[static_cast<size_t>(s)].size()) all_done = false;
    }
    if (all_done) {
      out.finished = true;
      return out;
    }
    if (!progress) {
      std::ostringstream where;
      for (int s = 0; s < S; ++s) {
        const auto& plan = plans[static_cast<size_t>(s)];
        const size_t p = pc[static_cast<size_t>(s)];
        where << " stage " << s << " at " << (p < plan.size() ? pipe_op_name(plan[p].op) : "end");
      }
      fail("deadlock:" + where.str());
      return out;
    }
  }
  fail("no end after 100000 rounds");
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(one_f_one_b_finishes_in_order_within_the_slots) {
  for (int S : {1, 2, 3, 4, 8}) {
    for (int M : {1, 2, 3, 4, 5, 8, 16}) {
      BOOST_TEST_CONTEXT("stages " << S << ", micro-batches " << M) {
        const Outcome o = simulate(S, M);
        BOOST_TEST(o.problem.empty(), o.problem);
        BOOST_TEST_REQUIRE(o.finished);
        std::vector<int> order(static_cast<size_t>(M));
        for (int i = 0; i < M; ++i) order[static_cast<size_t>(i)] = i;
        for (int s = 0; s < S; ++s) {
          BOOST_TEST(o.forwards[static_cast<size_t>(s)] == order, boost::test_tools::per_element());
          BOOST_TEST(o.backwards[static_cast<size_t>(s)] == order, boost::test_tools::per_element());
          // 1F1B's memory promise: stage s holds min(S - s, M) micro-batches at most.
          BOOST_TEST(o.max_alive[static_cast<size_t>(s)] == std::min(S - s, M), "stage " << s);
          BOOST_TEST(o.max_alive[static_cast<size_t>(s)] <= pipeline_slots(S, s, M));
          BOOST_TEST(pipeline_slots(S, s, M) <= S);
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(phases_are_warm_up_steady_cool_down_in_that_order) {
  const int S = 4, M = 6;
  for (int s = 0; s < S; ++s) {
    const auto plan = one_f_one_b(S, s, M);
    const int warmup = std::min(S - s - 1, M);
    int fw = 0, steady_f = 0, steady_b = 0, cool_b = 0;
    PipePhase last = PipePhase::WarmUp;
    for (const PipeAction& a : plan) {
      BOOST_TEST(static_cast<int>(a.phase) >= static_cast<int>(last), "phases go back at stage " << s);
      last = a.phase;
      if (a.op == PipeAction::Forward && a.phase == PipePhase::WarmUp) ++fw;
      if (a.op == PipeAction::Forward && a.phase == PipePhase::Steady) ++steady_f;
      if (a.op == PipeAction::Backward && a.phase == PipePhase::Steady) ++steady_b;
      if (a.op == PipeAction::Backward && a.phase == PipePhase::CoolDown) ++cool_b;
    }
    BOOST_TEST(fw == warmup);
    BOOST_TEST(steady_f == M - warmup);
    BOOST_TEST(steady_b == M - warmup);
    BOOST_TEST(cool_b == warmup);
  }
  BOOST_TEST(std::string(pipe_phase_name(PipePhase::WarmUp)) == "warm-up");
  BOOST_TEST(std::string(pipe_phase_name(PipePhase::Steady)) == "steady");
  BOOST_TEST(std::string(pipe_phase_name(PipePhase::CoolDown)) == "cool-down");
}

BOOST_AUTO_TEST_CASE(the_ends_of_the_pipeline_talk_to_no_missing_neighbour) {
  for (int M : {1, 4}) {
    for (const PipeAction& a : one_f_one_b(3, 0, M)) {
      BOOST_TEST((a.op != PipeAction::RecvForward && a.op != PipeAction::SendBackward &&
                  a.op != PipeAction::SendBackwardRecvForward));
    }
    for (const PipeAction& a : one_f_one_b(3, 2, M)) {
      BOOST_TEST((a.op != PipeAction::SendForward && a.op != PipeAction::RecvBackward &&
                  a.op != PipeAction::SendForwardRecvBackward));
    }
    // One stage: forward, backward, forward, backward...
    const auto solo = one_f_one_b(1, 0, M);
    BOOST_TEST(solo.size() == static_cast<size_t>(2 * M));
  }
}
