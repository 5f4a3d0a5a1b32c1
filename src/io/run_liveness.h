// Is the run behind a manifest that says "running" still alive?
//
// A killed rank 0 (or a killed mpirun) leaves its manifest at "running"
// forever. The manifest therefore records rank 0's host and pid and a
// heartbeat time rewritten every heartbeat_interval_s (docs/metrics.md):
//   - on the same host, a pid that no longer exists means dead at once;
//   - anywhere, a heartbeat older than kStaleHeartbeats intervals (and at
//     least kStaleMinimumSeconds) means dead: a live rank 0 rewrites it
//     even while a step or a collective takes long; a stopped one cannot.
// Manifests without these fields (older runs) are "unknown".
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

namespace vit::io {

inline constexpr double kHeartbeatSeconds = 30;
inline constexpr double kStaleHeartbeats = 4;
inline constexpr double kStaleMinimumSeconds = 120;

enum class Liveness { NotRunning, Alive, Dead, Unknown };

struct LivenessReport {
  Liveness state = Liveness::Unknown;
  std::string why;  // "pid 1234 on host n01 is gone", "no heartbeat since ... (25 min)"
};

// now_utc: seconds since the epoch (tests pass their own).
LivenessReport run_liveness(const nlohmann::json& manifest, double now_utc);
LivenessReport run_liveness(const nlohmann::json& manifest);

// Seconds since the epoch of "2026-11-25T09:14:03Z"; -1 when malformed.
double parse_iso_time(const std::string& text);

}  // namespace vit::io
