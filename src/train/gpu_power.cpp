#include "train/gpu_power.h"

#include <dlfcn.h>

#include <algorithm>
#include <type_traits>

#include "core/error.h"
#include "train/progress.h"

namespace vit::train {
namespace {

// The few NVML entry points used here, by their C signatures (nvml.h):
// every call returns an nvmlReturn_t (0 = success, 3 = not supported);
// enums are ints, nvmlDevice_t an opaque pointer.
using Ret = int;
using Dev = void*;
constexpr Ret kOk = 0, kNotSupported = 3;
constexpr int kClockSm = 1;  // NVML_CLOCK_SM

struct Nvml {
  std::string why_not;  // the library or a symbol is missing
  Ret (*init)() = nullptr;
  Ret (*shutdown)() = nullptr;
  const char* (*error_string)(Ret) = nullptr;
  Ret (*by_bus_id)(const char*, Dev*) = nullptr;
  Ret (*clock)(Dev, int, unsigned*) = nullptr;
  Ret (*max_clock)(Dev, int, unsigned*) = nullptr;
  Ret (*power)(Dev, unsigned*) = nullptr;        // mW
  Ret (*limit)(Dev, unsigned*) = nullptr;        // mW
  Ret (*energy)(Dev, unsigned long long*) = nullptr;  // mJ since the driver loaded
  Ret (*reasons)(Dev, unsigned long long*) = nullptr;

  std::string err(const char* what, Ret r) const {
    return str_cat(what, ": ", error_string ? error_string(r) : "error", " (NVML ", r, ")");
  }
};

const Nvml& nvml() {
  static const Nvml lib = [] {
    Nvml n;
    void* h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = dlerror();
      n.why_not = str_cat("cannot load libnvidia-ml.so.1 (", e ? e : "not found", ")");
      return n;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(h, name));
      if (!fn && n.why_not.empty()) n.why_not = str_cat("libnvidia-ml.so.1 has no ", name);
    };
    sym(n.init, "nvmlInit_v2");
    sym(n.shutdown, "nvmlShutdown");
    sym(n.error_string, "nvmlErrorString");
    sym(n.by_bus_id, "nvmlDeviceGetHandleByPciBusId_v2");
    sym(n.clock, "nvmlDeviceGetClockInfo");
    sym(n.max_clock, "nvmlDeviceGetMaxClockInfo");
    sym(n.power, "nvmlDeviceGetPowerUsage");
    sym(n.limit, "nvmlDeviceGetEnforcedPowerLimit");
    sym(n.energy, "nvmlDeviceGetTotalEnergyConsumption");
    // The newer name first (drivers from 535), then the older one.
    n.reasons = reinterpret_cast<Ret (*)(Dev, unsigned long long*)>(
        dlsym(h, "nvmlDeviceGetCurrentClocksEventReasons"));
    if (!n.reasons) sym(n.reasons, "nvmlDeviceGetCurrentClocksThrottleReasons");
    return n;
  }();
  return lib;
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

GpuPowerSummary summarize_power(const std::vector<PowerSample>& samples, const std::vector<EnergyStep>& steps,
                                double seconds, double power_limit_w, double sm_clock_max_mhz) {
  GpuPowerSummary s;
  if (samples.empty() || !(seconds > 0)) {
    s.why_not = samples.empty() ? "no samples (the stretch was shorter than one sampling period)"
                                : "the stretch took no time";
    return s;
  }
  s.measured = true;
  s.samples = static_cast<int>(samples.size());
  s.seconds = seconds;
  s.power_limit_w = power_limit_w;
  s.sm_clock_max_mhz = sm_clock_max_mhz;
  std::vector<double> clocks;
  double power_sum = 0;
  int capped = 0, thermal = 0;
  for (const PowerSample& p : samples) {
    clocks.push_back(p.sm_clock_mhz);
    power_sum += p.power_w;
    if (p.reasons & (kReasonSwPowerCap | kReasonHwPowerBrake)) ++capped;
    if (p.reasons & (kReasonSwThermal | kReasonHwThermal)) ++thermal;
  }
  s.sm_clock_median_mhz = median_of(clocks);
  s.sm_clock_min_mhz = *std::min_element(clocks.begin(), clocks.end());
  s.power_capped_share = static_cast<double>(capped) / s.samples;
  s.thermal_share = static_cast<double>(thermal) / s.samples;
  s.energy_counted = steps.size() >= 2 && steps.back().t > steps.front().t;
  if (s.energy_counted) {
    s.counter_span_s = steps.back().t - steps.front().t;
    s.power_mean_w = (steps.back().j - steps.front().j) / s.counter_span_s;
  } else {
    s.power_mean_w = power_sum / s.samples;
  }
  s.energy_j = s.power_mean_w * seconds;
  return s;
}

std::string describe_power(const GpuPowerSummary& s, double joules_per_image) {
  if (!s.measured) return str_cat("GPU power: not measured (", s.why_not, ")");
  std::string line = str_cat("GPU power: ", fmt("%.0f", s.power_mean_w), " W mean");
  if (s.power_limit_w > 0) line += str_cat(" (limit ", fmt("%.0f", s.power_limit_w), " W)");
  if (!s.energy_counted) line += " (sampled: the energy counter did not step twice)";
  line += str_cat(", SM clock median ", fmt("%.0f", s.sm_clock_median_mhz), " MHz (min ",
                  fmt("%.0f", s.sm_clock_min_mhz), ", max ", fmt("%.0f", s.sm_clock_max_mhz), "), held at the power limit in ",
                  fmt("%.0f", 100.0 * s.power_capped_share), "% of ", s.samples, " samples");
  if (s.thermal_share > 0) line += str_cat(", slowed for temperature in ", fmt("%.0f", 100.0 * s.thermal_share), "%");
  if (joules_per_image > 0) line += str_cat("; ", fmt("%.3f", joules_per_image), " J per image");
  return line;
}

GpuPowerMeter::GpuPowerMeter(const std::string& pci_bus_id, int period_ms) : period_ms_(period_ms) {
  if (pci_bus_id.empty()) {
    why_not_ = "not a GPU run";
    return;
  }
  const Nvml& n = nvml();
  if (!n.why_not.empty()) {
    why_not_ = n.why_not;
    return;
  }
  Ret r = n.init();
  if (r != kOk) {
    why_not_ = n.err("nvmlInit_v2", r);
    return;
  }
  nvml_up_ = true;
  Dev d = nullptr;
  unsigned limit = 0, max_mhz = 0;
  if ((r = n.by_bus_id(pci_bus_id.c_str(), &d)) != kOk) {
    why_not_ = n.err(str_cat("nvmlDeviceGetHandleByPciBusId_v2(", pci_bus_id, ")").c_str(), r);
  } else if ((r = n.limit(d, &limit)) != kOk) {
    why_not_ = n.err("nvmlDeviceGetEnforcedPowerLimit", r);
  } else if ((r = n.max_clock(d, kClockSm, &max_mhz)) != kOk) {
    why_not_ = n.err("nvmlDeviceGetMaxClockInfo", r);
  } else {
    device_ = d;
    limit_w_ = limit / 1000.0;
    max_mhz_ = max_mhz;
  }
}

GpuPowerMeter::~GpuPowerMeter() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (nvml_up_) nvml().shutdown();
}

bool GpuPowerMeter::poll_energy() {
  unsigned long long mj = 0;
  const Ret r = nvml().energy(static_cast<Dev>(device_), &mj);
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  std::lock_guard<std::mutex> lk(mu_);
  if (r != kOk) {
    if (error_.empty()) error_ = nvml().err("nvmlDeviceGetTotalEnergyConsumption", r);
    return false;
  }
  const double j = mj / 1000.0;
  if (j != last_j_) {
    if (last_j_ >= 0) steps_.push_back({t, j});  // the first reading is no step: it may be old
    last_j_ = j;
  }
  return true;
}

bool GpuPowerMeter::sample_once() {
  const Nvml& n = nvml();
  const Dev d = static_cast<Dev>(device_);
  unsigned mhz = 0, mw = 0;
  unsigned long long reasons = 0;
  Ret r;
  std::string err;
  if ((r = n.clock(d, kClockSm, &mhz)) != kOk) {
    err = n.err("nvmlDeviceGetClockInfo", r);
  } else if ((r = n.power(d, &mw)) != kOk) {
    err = n.err("nvmlDeviceGetPowerUsage", r);
  } else if ((r = n.reasons(d, &reasons)) != kOk) {
    err = n.err("nvmlDeviceGetCurrentClocksEventReasons", r);
  }
  std::lock_guard<std::mutex> lk(mu_);
  if (!err.empty()) {
    if (error_.empty()) error_ = err;
    return false;
  }
  samples_.push_back({static_cast<double>(mhz), mw / 1000.0, static_cast<uint64_t>(reasons)});
  return true;
}

void GpuPowerMeter::sample_loop() {
  constexpr int kEnergyPollMs = 5;
  const int every = std::max(1, period_ms_ / kEnergyPollMs);  // energy polls per sample
  std::unique_lock<std::mutex> lk(mu_);
  for (int tick = 0; !stop_; ++tick) {
    lk.unlock();
    const bool ok = (!counter_ || poll_energy()) && (tick % every != 0 || sample_once());
    lk.lock();
    if (!ok) return;
    cv_.wait_for(lk, std::chrono::milliseconds(kEnergyPollMs), [&] { return stop_; });
  }
}

void GpuPowerMeter::start() {
  if (!device_ || running_) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    samples_.clear();
    steps_.clear();
    error_.clear();
    last_j_ = -1;
    stop_ = false;
  }
  unsigned long long mj = 0;
  counter_ = nvml().energy(static_cast<Dev>(device_), &mj) != kNotSupported;  // other failures: at the first poll
  t0_ = std::chrono::steady_clock::now();
  running_ = true;
  thread_ = std::thread([this] { sample_loop(); });
}

GpuPowerSummary GpuPowerMeter::stop() {
  GpuPowerSummary none;
  if (!device_) {
    none.why_not = why_not_;
    return none;
  }
  if (!running_) {
    none.why_not = "the meter was not started";
    return none;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  running_ = false;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  std::lock_guard<std::mutex> lk(mu_);
  if (!error_.empty()) {
    none.why_not = error_;
    return none;
  }
  // The counter counts up from the driver's start; one that went down (a
  // driver reload) is not used.
  const bool monotonic = std::is_sorted(steps_.begin(), steps_.end(),
                                        [](const EnergyStep& a, const EnergyStep& b) { return a.j < b.j; });
  return summarize_power(samples_, monotonic ? steps_ : std::vector<EnergyStep>{}, seconds, limit_w_, max_mhz_);
}

}  // namespace vit::train
