// Per-op timing for the benchmark's profile (benchmark.profile).
//
// Every public kernel call goes through VIT_DISPATCH (dispatch.h), which opens
// a ProfileScope named after the op ("matmul_forward", "attention_backward",
// ...). While the profiler is enabled, a scope records a timing event on the
// op's stream before and after the call (the GPU's own clock: no host
// synchronisation inside the step) or, on the CPU, reads the wall clock.
// Ops that are bound by memory say how many bytes a call reads and writes
// (VIT_DISPATCH_BYTES, dispatch.h): each operand once, one read and written
// twice; small per-block partial sums of fused reductions left out. That is
// the traffic the op cannot avoid, so bytes / time is its achieved rate.
// Scopes nested inside another op's scope are not recorded, so each op's time
// counts once. Communication records its own scopes (on the communication
// stream). collect() is called after the host has synchronised with every
// stream: it sums the time and calls per name since the last collect and
// clears the records. Disabled (the default), a scope costs one branch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/context.h"

namespace vit::kernels {

struct OpTime {
  std::string name;
  double ms = 0.0;     // total over the recorded calls
  int64_t calls = 0;
  double bytes = 0.0;  // total the calls said they move (0: the op does not say)
};

class OpProfiler {
 public:
  static OpProfiler& instance();
  void enable(bool on);
  bool enabled() const { return enabled_; }
  // Returns a token for end(), or -1 when nothing is recorded.
  int begin(const char* name, Device device, void* stream, double bytes = 0.0);
  void end(int token);
  // Sums per name, largest first; clears the records (events are reused).
  std::vector<OpTime> collect();
  ~OpProfiler();

 private:
  struct Record;
  OpProfiler() = default;
  bool enabled_ = false;
  int depth_ = 0;
  std::vector<Record*> records_;
  size_t used_ = 0;
};

class ProfileScope {
 public:
  ProfileScope(Device device, void* stream, const char* name, double bytes = 0.0)
      : token_(OpProfiler::instance().enabled() ? OpProfiler::instance().begin(name, device, stream, bytes) : -2) {}
  ProfileScope(const Context& ctx, const char* name, double bytes = 0.0)
      : ProfileScope(ctx.device, ctx.stream, name, bytes) {}
  ~ProfileScope() {
    if (token_ != -2) OpProfiler::instance().end(token_);
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  int token_;
};

}  // namespace vit::kernels
