#!/usr/bin/env python3
"""One training step's kernels from an ncu CSV, grouped by kernel.

The CSV comes from ncu's command line with one metric, e.g. on the GPU machine

  mpirun -np 1 ncu --clock-control none --cache-control none \\
      --metrics gpu__time_duration.sum --launch-skip 9000 --launch-count 1500 --csv \\
      vit_hpc configs/benchmark.yaml --set benchmark.enabled=true ... > step.csv

A step is the kernels after one AdamW kernel up to and including the next
(the optimizer runs once a step). Prints the kernels per step and their summed
duration for every whole step in the file, then the first step's kernels by
name: total, share, count and mean. ncu runs each kernel alone, so a short
kernel's duration includes a microsecond or so of its own start and drain
that a graph replay overlaps: the sum can exceed the step time.

  python3 tests/gpu/ncu_step_breakdown.py step.csv
"""
import collections
import csv
import sys


def main(path):
    with open(path) as f:
        rows = list(csv.DictReader(line for line in f if line.startswith('"')))
    rows = [r for r in rows if r.get("Metric Name") == "gpu__time_duration.sum"]
    if not rows:
        sys.exit(f"{path}: no gpu__time_duration.sum rows (was ncu run with --csv and that metric?)")
    unit = {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "nsecond": 1e-3, "ms": 1e3, "msecond": 1e3}
    kernels = []
    for r in rows:
        scale = unit.get(r["Metric Unit"])
        if scale is None:
            sys.exit(f"{path}: unknown unit {r['Metric Unit']!r}")
        kernels.append((r["Kernel Name"], float(r["Metric Value"].replace(",", "")) * scale))
    marks = [i for i, (name, _) in enumerate(kernels) if "adamw" in name.lower()]
    if len(marks) < 2:
        sys.exit(f"{path}: fewer than two AdamW kernels, so no whole step (widen --launch-count)")
    for a, b in zip(marks, marks[1:]):
        step = kernels[a + 1 : b + 1]
        print(f"step: {len(step)} kernels, {sum(d for _, d in step) / 1e3:.3f} ms summed")
    step = kernels[marks[0] + 1 : marks[1] + 1]
    total = sum(d for _, d in step)
    groups = collections.defaultdict(lambda: [0, 0.0])
    for name, d in step:
        key = name.split("(")[0][:100]
        groups[key][0] += 1
        groups[key][1] += d
    print(f"\n{'us':>9} {'share':>6} {'count':>5} {'mean us':>8}  kernel")
    for key, (n, t) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        print(f"{t:9.1f} {100 * t / total:5.1f}% {n:5d} {t / n:8.1f}  {key}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
