"""How often the H200's energy counter steps and what an NVML read costs: poll the counter every ~1 ms
for 2 s under a GEMM load (a thread multiplying 8192^2 bf16 matrices)."""
import ctypes, time, threading
import torch
lib = ctypes.CDLL("libnvidia-ml.so.1")
assert lib.nvmlInit_v2() == 0
dev = ctypes.c_void_p()
assert lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(dev)) == 0
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
stop = False
def load():
    while not stop:
        for _ in range(20): a @ a
        torch.cuda.synchronize()
th = threading.Thread(target=load); th.start(); time.sleep(1.0)
def timed(fn, *args):
    c0 = time.perf_counter(); r = fn(*args); return r, time.perf_counter() - c0
v = ctypes.c_ulonglong(); u = ctypes.c_uint(); last = None; steps = []; t0 = time.perf_counter()
cost = {"energy": [], "power": [], "clock": []}
while time.perf_counter() - t0 < 2.0:
    _, c = timed(lib.nvmlDeviceGetTotalEnergyConsumption, dev, ctypes.byref(v)); cost["energy"].append(c)
    if v.value != last:
        steps.append((time.perf_counter() - t0, v.value)); last = v.value
    if len(cost["energy"]) % 10 == 0:
        _, c = timed(lib.nvmlDeviceGetPowerUsage, dev, ctypes.byref(u)); cost["power"].append(c)
        _, c = timed(lib.nvmlDeviceGetClockInfo, dev, 1, ctypes.byref(u)); cost["clock"].append(c)
    time.sleep(0.001)
stop = True; th.join()
gaps = sorted(b[0] - a[0] for a, b in zip(steps[1:], steps[2:]))
inc = sorted(b[1] - a[1] for a, b in zip(steps[1:], steps[2:]))
med = lambda x: sorted(x)[len(x) // 2]
print(f"{len(cost['energy'])} counter reads in 2 s; read cost median (ms): energy {med(cost['energy'])*1e3:.2f}, "
      f"power {med(cost['power'])*1e3:.2f}, clock {med(cost['clock'])*1e3:.2f}; max energy read {max(cost['energy'])*1e3:.2f}")
print(f"{len(steps) - 1} counter steps; interval median {gaps[len(gaps)//2]*1e3:.1f} ms (min {gaps[0]*1e3:.1f}, max "
      f"{gaps[-1]*1e3:.1f}); increment median {inc[len(inc)//2]/1000:.2f} J (min {inc[0]/1000:.2f}, max {inc[-1]/1000:.2f})")
