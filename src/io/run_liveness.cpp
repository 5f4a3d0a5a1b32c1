#include "io/run_liveness.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace vit::io {

namespace {

// The process is gone: no such pid, or a zombie (exited, not yet reaped).
bool process_gone(long long pid) {
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

}  // namespace

double parse_iso_time(const std::string& text) {
  std::tm tm{};
  int y, mo, d, h, mi, s;
  if (std::sscanf(text.c_str(), "%d-%d-%dT%d:%d:%dZ", &y, &mo, &d, &h, &mi, &s) != 6) return -1;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return static_cast<double>(timegm(&tm));
}

LivenessReport run_liveness(const nlohmann::json& m, double now_utc) {
  LivenessReport r;
  if (!m.is_object() || m.value("status", "") != "running") {
    r.state = Liveness::NotRunning;
    return r;
  }
  const std::string host = m.contains("host") && m["host"].is_string() ? m["host"].get<std::string>() : "";
  const long long pid = m.contains("pid") && m["pid"].is_number_integer() ? m["pid"].get<long long>() : -1;
  char here[256] = {};
  ::gethostname(here, sizeof here - 1);
  if (!host.empty() && pid > 0 && host == here) {
    if (process_gone(pid)) {
      r.state = Liveness::Dead;
      r.why = str_cat("its rank 0 (pid ", pid, " on host ", host, ") is gone");
      return r;
    }
  }
  if (!m.contains("heartbeat") || !m["heartbeat"].is_string()) return r;  // Unknown
  const double beat = parse_iso_time(m["heartbeat"].get<std::string>());
  if (beat < 0) return r;
  const double interval = m.value("heartbeat_interval_s", kHeartbeatSeconds);
  const double stale = std::max(kStaleMinimumSeconds, kStaleHeartbeats * interval);
  const double age = now_utc - beat;
  if (age > stale) {
    r.state = Liveness::Dead;
    r.why = str_cat("no heartbeat since ", m["heartbeat"].get<std::string>(), " (", static_cast<long long>(age / 60),
                    " min ago; rank 0 rewrites it every ", interval, " s)");
    return r;
  }
  r.state = Liveness::Alive;
  r.why = str_cat("heartbeat ", static_cast<long long>(age), " s ago", host.empty() ? "" : str_cat(" from host ", host),
                  pid > 0 ? str_cat(", pid ", pid) : "");
  return r;
}

LivenessReport run_liveness(const nlohmann::json& manifest) {
  return run_liveness(manifest, static_cast<double>(std::time(nullptr)));
}

}  // namespace vit::io
