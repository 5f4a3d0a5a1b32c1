"""An 8192^3 bf16 GEMM repeated for 12 s: TFLOP/s in 0.25 s windows (CUDA events),
with NVML's SM clock and power (pytorch_baseline.PowerMeter) over the first 0.3 s
and over the last 8 s: the matrix ceiling a short burst measures against the one a
sustained run holds at the power limit."""
import importlib.util, sys, time
import torch
spec = importlib.util.spec_from_file_location("pb", "tests/gpu/pytorch_baseline.py")
pb = importlib.util.module_from_spec(spec); spec.loader.exec_module(pb)
n = 8192
a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
for _ in range(3): torch.matmul(a, b, out=c)
torch.cuda.synchronize(); time.sleep(2.0)  # let the GPU cool back to idle clocks
flop = 2.0 * n ** 3
rates = []
m_first = pb.PowerMeter(0); m_first.start()
t_end = time.perf_counter() + 12.0
first_power = None; m_last = None; t_start = time.perf_counter()
while time.perf_counter() < t_end:
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record(); k = 0
    for _ in range(200):
        torch.matmul(a, b, out=c); k += 1
    e1.record(); e1.synchronize()
    ms = e0.elapsed_time(e1)
    rates.append((time.perf_counter() - t_start, flop * k / (ms * 1e-3) / 1e12))
    if first_power is None:
        first_power = m_first.stop()
    if m_last is None and time.perf_counter() - t_start > 4.0:
        m_last = pb.PowerMeter(0); m_last.start()
last_power = m_last.stop() if m_last else {}
print("window end (s), TFLOP/s:", " ".join(f"{t:.2f}:{r:.0f}" for t, r in rates[:6]), "...",
      " ".join(f"{t:.2f}:{r:.0f}" for t, r in rates[-3:]))
late = sorted(r for t, r in rates if t > 4.0)
print(f"first window {rates[0][1]:.0f} TFLOP/s; after 4 s median {late[len(late)//2]:.0f} TFLOP/s over {len(late)} windows")
for name, p in (("first window", first_power), ("after 4 s", last_power)):
    if p:
        print(f"{name}: {p['gpu_power_w']:.0f} W (limit {p['gpu_power_limit_w']:.0f}), SM clock median {p['sm_clock_mhz']:.0f} "
              f"(min {p['sm_clock_min_mhz']:.0f}, max {p['sm_clock_max_mhz']:.0f}) MHz, at the power limit in "
              f"{100 * p['power_capped_share']:.0f}% of {p['power_samples']} samples")
    else:
        print(f"{name}: power not measured")
