// The 1F1B pipeline schedule (PipeDream-flush, Megatron's
// forward_backward_pipelining_without_interleaving) as a plain list of
// actions per stage, so that the plugin executes it and a test can check it
// (every send meets the receive of the same micro-batch, nothing deadlocks,
// at most `stages` micro-batches are alive on any stage) without any ranks.
//
// Stage s of S with M micro-batches:
//   warm-up    W = min(S - s - 1, M) forwards: RecvForward, Forward, SendForward
//   steady     M - W rounds of one forward and one backward: the forward of
//              micro-batch W + i, its output sent while the gradient of
//              micro-batch i comes back (one exchange), the backward of i,
//              its input gradient sent while the activation of W + i + 1
//              comes in (one exchange; a plain SendBackward in the last round)
//   cool-down  the W backwards left: RecvBackward, Backward, SendBackward
// The first stage has nothing to receive forward or send backward and the
// last nothing to send forward or receive backward: those actions are left
// out of their lists (an exchange with a missing neighbour is left out whole:
// both its halves talk to the same neighbour). Micro-batches go forward and
// backward in order 0..M-1, so a stage holds the activations of at most W + 1
// <= S - s micro-batches at a time.
#pragma once

#include <cstdint>
#include <vector>

namespace vit::parallel {

enum class PipePhase : uint8_t { WarmUp, Steady, CoolDown };
const char* pipe_phase_name(PipePhase p);  // "warm-up", "steady", "cool-down"

struct PipeAction {
  enum Op : uint8_t {
    RecvForward,              // activation of `micro` from the previous stage
    Forward,                  // this stage's layers on `micro`
    SendForward,              // output of `micro` to the next stage
    SendForwardRecvBackward,  // output of `micro` out, the gradient of `other` in (next stage)
    RecvBackward,             // gradient of `micro`'s output from the next stage
    Backward,                 // this stage's layers backward on `micro`
    SendBackward,             // input gradient of `micro` to the previous stage
    SendBackwardRecvForward,  // input gradient of `micro` out, the activation of `other` in (previous stage)
  };
  Op op = Forward;
  PipePhase phase = PipePhase::Steady;
  int micro = 0;   // the micro-batch computed or sent (or received, for Recv*)
  int other = -1;  // the micro-batch received by an exchange
};
const char* pipe_op_name(PipeAction::Op op);

// The actions of stage `stage` of `stages` for `micro_batches` micro-batches.
std::vector<PipeAction> one_f_one_b(int stages, int stage, int micro_batches);

// Activation slots a stage needs: the most micro-batches it holds at once.
int pipeline_slots(int stages, int stage, int micro_batches);

}  // namespace vit::parallel
