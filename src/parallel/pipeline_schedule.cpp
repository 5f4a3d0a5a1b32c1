#include "parallel/pipeline_schedule.h"

#include <algorithm>

#include "core/error.h"

namespace vit::parallel {

const char* pipe_phase_name(PipePhase p) {
  switch (p) {
    case PipePhase::WarmUp: return "warm-up";
    case PipePhase::Steady: return "steady";
    case PipePhase::CoolDown: return "cool-down";
  }
  VIT_THROW("unknown pipeline phase ", static_cast<int>(p));
}

const char* pipe_op_name(PipeAction::Op op) {
  switch (op) {
    case PipeAction::RecvForward: return "recv_forward";
    case PipeAction::Forward: return "forward";
    case PipeAction::SendForward: return "send_forward";
    case PipeAction::SendForwardRecvBackward: return "send_forward_recv_backward";
    case PipeAction::RecvBackward: return "recv_backward";
    case PipeAction::Backward: return "backward";
    case PipeAction::SendBackward: return "send_backward";
    case PipeAction::SendBackwardRecvForward: return "send_backward_recv_forward";
  }
  VIT_THROW("unknown pipeline action ", static_cast<int>(op));
}

int pipeline_slots(int stages, int stage, int micro_batches) {
  VIT_CHECK(stages >= 1 && stage >= 0 && stage < stages && micro_batches >= 1, "pipeline stage ", stage, " of ",
            stages, " with ", micro_batches, " micro-batches");
  return std::min(stages - stage - 1, micro_batches - 1) + 1;
}

std::vector<PipeAction> one_f_one_b(int stages, int stage, int micro_batches) {
  VIT_CHECK(stages >= 1 && stage >= 0 && stage < stages && micro_batches >= 1, "pipeline stage ", stage, " of ",
            stages, " with ", micro_batches, " micro-batches");
  const bool first = stage == 0, last = stage == stages - 1;
  const int M = micro_batches;
  const int warmup = std::min(stages - stage - 1, M);
  const int steady = M - warmup;
  std::vector<PipeAction> out;
  auto add = [&](PipeAction::Op op, PipePhase phase, int micro, int other = -1) {
    PipeAction a;
    a.op = op;
    a.phase = phase;
    a.micro = micro;
    a.other = other;
    out.push_back(a);
  };

  // Warm-up: forwards only, filling the pipeline.
  for (int i = 0; i < warmup; ++i) {
    if (!first) add(PipeAction::RecvForward, PipePhase::WarmUp, i);
    add(PipeAction::Forward, PipePhase::WarmUp, i);
    if (!last) add(PipeAction::SendForward, PipePhase::WarmUp, i);
  }
  // Steady: one forward, one backward.
  if (steady > 0 && !first) add(PipeAction::RecvForward, PipePhase::Steady, warmup);
  for (int i = 0; i < steady; ++i) {
    const int fwd = warmup + i, bwd = i;
    add(PipeAction::Forward, PipePhase::Steady, fwd);
    if (!last) add(PipeAction::SendForwardRecvBackward, PipePhase::Steady, fwd, bwd);
    add(PipeAction::Backward, PipePhase::Steady, bwd);
    if (!first) {
      if (i + 1 == steady) {
        add(PipeAction::SendBackward, PipePhase::Steady, bwd);
      } else {
        add(PipeAction::SendBackwardRecvForward, PipePhase::Steady, bwd, fwd + 1);
      }
    }
  }
  // Cool-down: the backwards of the warm-up's micro-batches.
  for (int i = 0; i < warmup; ++i) {
    const int bwd = steady + i;
    if (!last) add(PipeAction::RecvBackward, PipePhase::CoolDown, bwd);
    add(PipeAction::Backward, PipePhase::CoolDown, bwd);
    if (!first) add(PipeAction::SendBackward, PipePhase::CoolDown, bwd);
  }
  return out;
}

}  // namespace vit::parallel
