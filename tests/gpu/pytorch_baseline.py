#!/usr/bin/env python3
"""The PyTorch step that vit_hpc's benchmark is compared with, timed the same way.

ViT-B/16 from timm (3 classes, 224 px), synthetic uint8 images normalised on
the GPU as vit_hpc does (mean = std = 0.5), bf16 autocast, cross-entropy,
backward, fused AdamW, zero_grad; eager and torch.compile; the host waits
for every step (vit_hpc's steps end with one host synchronisation too).
Warm-up steps are not timed; throughput = images x measured steps / the wall
time of the measured steps; memory = torch.cuda.max_memory_allocated over
the measured steps (vit_hpc reports its own allocations the same way).
The GPU's power, SM clock and energy over the measured steps come from NVML
(libnvidia-ml.so.1 through ctypes), sampled every 20 ms as vit_hpc's
benchmark does (src/train/gpu_power.h); without NVML they are left out.

Each (mode, batch size) becomes a run folder in vit_hpc's format (manifest.json
+ rank_0.jsonl with one "benchmark" line) under --output, so `vit_results`
puts the figures in the same tables as vit_hpc's runs of that folder:

    python3 tests/gpu/pytorch_baseline.py --output results/GRID --batch-sizes 32 256 --steps 30 --warmup 5
    bash run_benchmark.sh --with-pytorch ...     (does both and prints one table)
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time

import torch
import torch.nn.functional as F


def now():
    return datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class PowerMeter:
    """NVML's SM clock, power draw and clock event reasons every `period` s in a
    thread, and the energy counter at start and stop (see gpu_power.h)."""

    def __init__(self, device_index, period=0.02):
        self.why_not, self.samples, self.period = "", [], period
        self.stop_flag, self.thread, self.error = threading.Event(), None, ""
        self.steps, self.last_j = [], None  # the energy counter's steps: (seconds from start, joules)
        try:
            self.lib = ctypes.CDLL("libnvidia-ml.so.1")
        except OSError as e:
            self.why_not = f"cannot load libnvidia-ml.so.1 ({e})"
            return
        self.lib.nvmlErrorString.restype = ctypes.c_char_p
        self.reasons_fn = getattr(self.lib, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            self.lib.nvmlDeviceGetCurrentClocksThrottleReasons
        self.dev = ctypes.c_void_p()
        try:
            self.call("nvmlInit_v2")
            p = torch.cuda.get_device_properties(device_index)
            bus = f"{p.pci_domain_id:08x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0".encode()
            self.call("nvmlDeviceGetHandleByPciBusId_v2", ctypes.c_char_p(bus), ctypes.byref(self.dev))
            self.limit_w = self.uint("nvmlDeviceGetEnforcedPowerLimit") / 1000.0
            self.max_mhz = self.uint("nvmlDeviceGetMaxClockInfo", 1)
        except (RuntimeError, AttributeError) as e:
            self.why_not = str(e)

    def call(self, name, *args):
        r = getattr(self.lib, name)(*args)
        if r != 0:
            raise RuntimeError(f"{name}: {self.lib.nvmlErrorString(r).decode()} (NVML {r})")

    def uint(self, name, *args):
        v = ctypes.c_uint()
        self.call(name, self.dev, *args, ctypes.byref(v))
        return v.value

    def energy_j(self):
        v = ctypes.c_ulonglong()
        r = self.lib.nvmlDeviceGetTotalEnergyConsumption(self.dev, ctypes.byref(v))
        return v.value / 1000.0 if r == 0 else None

    def sample_loop(self):
        """The energy counter every 5 ms (its steps), the rest every `period`."""
        every, tick = max(1, round(self.period / 0.005)), 0
        try:
            while not self.stop_flag.is_set():
                j = self.energy_j()
                if j is not None and j != self.last_j:
                    if self.last_j is not None:  # the first reading is no step: it may be old
                        self.steps.append((time.perf_counter() - self.t0, j))
                    self.last_j = j
                if tick % every == 0:
                    reasons = ctypes.c_ulonglong()
                    r = self.reasons_fn(self.dev, ctypes.byref(reasons))
                    if r != 0:
                        raise RuntimeError(f"nvmlDeviceGetCurrentClocksEventReasons: NVML {r}")
                    self.samples.append((self.uint("nvmlDeviceGetClockInfo", 1),
                                         self.uint("nvmlDeviceGetPowerUsage") / 1000.0, reasons.value))
                tick += 1
                self.stop_flag.wait(0.005)
        except RuntimeError as e:
            self.error = str(e)

    def start(self):
        if self.why_not:
            return
        self.t0 = time.perf_counter()
        self.thread = threading.Thread(target=self.sample_loop, daemon=True)
        self.thread.start()

    def stop(self):
        """The benchmark line's power fields, or {} (and why_not set)."""
        if self.why_not:
            return {}
        self.stop_flag.set()
        self.thread.join()
        seconds = time.perf_counter() - self.t0
        if self.error or not self.samples:
            self.why_not = self.error or "no samples"
            return {}
        clocks = sorted(c for c, _, _ in self.samples)
        n = len(clocks)
        median = clocks[n // 2] if n % 2 else 0.5 * (clocks[n // 2 - 1] + clocks[n // 2])
        # The mean power between the counter's first and last step (it moves in steps), else the samples'.
        st = self.steps
        counted = len(st) >= 2 and st[-1][0] > st[0][0] and all(a[1] < b[1] for a, b in zip(st, st[1:]))
        span = st[-1][0] - st[0][0] if counted else 0.0
        power = (st[-1][1] - st[0][1]) / span if counted else sum(w for _, w, _ in self.samples) / n
        return {"gpu_energy_j": power * seconds, "gpu_power_w": power, "gpu_power_limit_w": self.limit_w,
                "sm_clock_mhz": median, "sm_clock_min_mhz": clocks[0], "sm_clock_max_mhz": self.max_mhz,
                "power_capped_share": sum(1 for _, _, r in self.samples if r & (0x4 | 0x80)) / n,
                "thermal_share": sum(1 for _, _, r in self.samples if r & (0x20 | 0x40)) / n,
                "power_samples": n, "energy_counter_span_s": span}


def time_steps(batch, mode, steps, warmup):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", num_classes=3).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    net = torch.compile(model) if mode == "compile" else model
    images = torch.randint(0, 256, (batch, 224, 224, 3), device="cuda", dtype=torch.uint8)
    labels = torch.randint(0, 3, (batch,), device="cuda")

    def step():
        x = images.permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5).div_(0.5)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    torch.cuda.reset_peak_memory_stats()
    times = []
    meter = PowerMeter(torch.cuda.current_device())
    meter.start()
    t0 = time.perf_counter()
    for _ in range(steps):
        s0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - s0)
    wall = time.perf_counter() - t0
    power = meter.stop()
    if not power:
        print(f"GPU power: not measured ({meter.why_not})")
    peak = torch.cuda.max_memory_allocated()
    del net, model, opt
    torch.cuda.empty_cache()
    return times, wall, peak, power


def write_run(out_dir, mode, batch, steps, warmup, times, wall, peak, power):
    name = f"pytorch_{mode}_bs{batch}"
    run_dir = os.path.join(out_dir, name)
    os.makedirs(run_dir, exist_ok=False)  # never over an earlier run
    ordered = sorted(times)

    def pct(q):
        return ordered[int(round(q * (len(ordered) - 1)))]

    ips = batch * steps / wall
    prop = torch.cuda.get_device_properties(0)
    start = now()
    with open(os.path.join(run_dir, "rank_0.jsonl"), "w") as f:
        for i, t in enumerate(times):
            f.write(json.dumps({"type": "benchmark_step", "step": i + 1, "step_time": t}) + "\n")
        f.write(json.dumps({"type": "benchmark", "batch_size": batch, "global_batch": batch, "warmup_steps": warmup,
                            "steps": steps, "images_per_s": ips, "it_per_s": steps / wall,
                            "step_time_median": pct(0.5), "step_time_min": pct(0.0), "step_time_max": pct(1.0),
                            "step_time_p10": pct(0.1), "step_time_p90": pct(0.9), "peak_mem": peak, **power}) + "\n")
    # The revision of the checkout, or VIT_GIT_REVISION where the checkout's
    # .git is not its own (a copy of a working tree on a GPU machine).
    rev = os.environ.get("VIT_GIT_REVISION", "")
    if not rev:
        try:
            rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                                 cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "unknown"
        except OSError:
            rev = "unknown"
    manifest = {
        "format": 1, "run": name, "mode": "benchmark", "status": "completed",
        "spec": {"baseline": f"timm vit_base_patch16_224, bf16 autocast, fused AdamW, {mode}",
                 "torch": torch.__version__},
        "world": {"size": 1, "dp": 1, "tp": 1, "pp": 1, "nodes": 1, "ranks_per_node": 1, "device": "cuda",
                  "communicator": "nccl", "describe": "1 process, 1 GPU (PyTorch)"},
        "plugin": f"pytorch_{mode}", "precision": "bf16", "global_batch": batch,
        "hardware": {"host": socket.gethostname(), "cpu": cpu_name(), "cpu_threads": os.cpu_count() or 1,
                     "gpu_name": prop.name, "gpu_memory_bytes": prop.total_memory},
        "git_revision": rev, "start_time": start, "end_time": now(),
    }
    tmp = os.path.join(run_dir, "manifest.json.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, os.path.join(run_dir, "manifest.json"))
    line = f"{name}: {ips:.1f} images/s, step median {pct(0.5) * 1e3:.2f} ms, peak {peak / 2**30:.2f} GiB"
    if power:
        line += (f"; {power['gpu_power_w']:.0f} W (limit {power['gpu_power_limit_w']:.0f}), SM clock median "
                 f"{power['sm_clock_mhz']:.0f} MHz, at the power limit in {100 * power['power_capped_share']:.0f}% "
                 f"of {power['power_samples']} samples, {power['gpu_energy_j'] / (batch * steps):.3f} J per image")
    print(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--output", required=True, help="the results folder of the grid (run folders go inside)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--modes", nargs="+", default=["eager", "compile"], choices=["eager", "compile"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("pytorch_baseline.py: no CUDA GPU visible")
    torch.backends.cuda.matmul.allow_tf32 = True
    os.makedirs(args.output, exist_ok=True)
    for mode in args.modes:
        for batch in args.batch_sizes:
            times, wall, peak, power = time_steps(batch, mode, args.steps, args.warmup)
            write_run(args.output, mode, batch, args.steps, args.warmup, times, wall, peak, power)
    return 0


if __name__ == "__main__":
    sys.exit(main())
