// The GPU's power, SM clock and energy over a stretch of a run (the
// benchmark's measured steps), read from NVML, the driver's management
// library (libnvidia-ml.so.1, loaded at run time: a build needs no NVML
// headers, a machine without the library reports "not measured").
//
// Why: a long ViT-B/16 step at batch 256 holds an H200 at its power limit
// (700 W), where the driver lowers the SM clock (~1600 of 1980 MHz); kernels
// then run ~20% slower than the same kernels timed alone. Throughput figures
// mean little without the clock they ran at, and energy per image is what a
// power-bound step can still improve.
//
// A sampling thread reads the SM clock, the power draw and the clock event
// reasons every `period_ms`, and the GPU's energy counter (Volta and later)
// every 5 ms, nominally: the reads themselves take time (on an H200, ~40 ms
// passed between samples). The counter moves in steps (on an H200, a short stretch's two
// readings gave anything from 540 to 818 W for one workload), so the mean
// power is taken between the first and the last step seen inside the
// stretch: (energy at the last step - at the first) / the time between
// them; energy = that power x the stretch's time. With fewer than two steps
// seen, the mean sampled power stands in.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace vit::train {

struct PowerSample {
  double sm_clock_mhz = 0;
  double power_w = 0;
  uint64_t reasons = 0;  // NVML's clock event reasons (a bit mask)
};

// NVML's clock event reason bits that this summary counts.
constexpr uint64_t kReasonSwPowerCap = 0x4;     // the power limit
constexpr uint64_t kReasonSwThermal = 0x20;      // the driver's thermal slowdown
constexpr uint64_t kReasonHwThermal = 0x40;      // hardware thermal slowdown
constexpr uint64_t kReasonHwPowerBrake = 0x80;   // an external power brake

struct GpuPowerSummary {
  bool measured = false;
  std::string why_not;          // when not measured: what failed
  int samples = 0;
  double seconds = 0;           // the stretch's wall time
  double energy_j = 0;          // over the stretch: power_mean_w x seconds
  bool energy_counted = false;  // the mean power from the energy counter's steps (else the sampled power's mean)
  double counter_span_s = 0;    // the time between the counter's first and last step in the stretch
  double power_mean_w = 0;
  double power_limit_w = 0;     // the enforced limit
  double sm_clock_median_mhz = 0, sm_clock_min_mhz = 0;
  double sm_clock_max_mhz = 0;  // the GPU's highest SM clock
  double power_capped_share = 0;  // share of samples held back by the power limit (or a power brake)
  double thermal_share = 0;       // ... by temperature
};

// A reading of the energy counter where it changed.
struct EnergyStep {
  double t = 0;  // seconds from the stretch's start
  double j = 0;  // the counter, joules
};

// The summary of a stretch's samples and counter steps (fewer than two
// steps: the mean sampled power stands in). At least one sample and
// seconds > 0, or the summary says not measured.
GpuPowerSummary summarize_power(const std::vector<PowerSample>& samples, const std::vector<EnergyStep>& steps,
                                double seconds, double power_limit_w, double sm_clock_max_mhz);

// "GPU power: 692 W mean (limit 700 W), SM clock median 1605 MHz (min 1530,
// max 1980), held at the power limit in 98% of 340 samples; 0.153 J per
// image", or "GPU power: not measured (why)". joules_per_image <= 0: no
// per-image figure (the benchmark gives the job's: all ranks' energy).
std::string describe_power(const GpuPowerSummary& s, double joules_per_image);

// Samples one GPU, named by its PCI bus id ("0000:3b:00.0", as
// cudaDeviceGetPCIBusId writes it); an empty id (a CPU run) measures
// nothing. NVML failures never stop the run: they end up in why_not.
class GpuPowerMeter {
 public:
  explicit GpuPowerMeter(const std::string& pci_bus_id, int period_ms = 20);
  ~GpuPowerMeter();
  GpuPowerMeter(const GpuPowerMeter&) = delete;
  GpuPowerMeter& operator=(const GpuPowerMeter&) = delete;

  void start();              // reads the energy counter, starts sampling
  GpuPowerSummary stop();    // stops sampling, reads the counter again

 private:
  void sample_loop();
  bool sample_once();  // false (and error_ set) when a read fails
  bool poll_energy();  // records a counter step; false (and error_ set) when the read fails

  std::string why_not_;  // set when NVML or the device could not be opened
  void* device_ = nullptr;  // nvmlDevice_t
  bool nvml_up_ = false;
  int period_ms_;
  double limit_w_ = 0, max_mhz_ = 0;
  bool counter_ = false;  // the GPU has an energy counter
  std::chrono::steady_clock::time_point t0_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, running_ = false;
  std::string error_;  // a failed read while sampling (guarded by mu_)
  std::vector<PowerSample> samples_;
  std::vector<EnergyStep> steps_;
  double last_j_ = -1;  // the counter's last reading
  std::thread thread_;
};

}  // namespace vit::train
