#!/usr/bin/env bash
# Call A (session 22): where do the attention kernels lose time in the step? The op profile at batch 256
# gives 0.536 ms a call for the attention backward and 0.176 for the forward, against 0.438 / 0.140 in
# bench_kernels (each op alone, as a graph). Clocks and power sampled every 100 ms through bench_kernels
# and a 300-step run; the GPU test add_gradient_now_and_deferred on a build whose add_gradient always
# accumulates (must fail).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=.devcarry75
mkdir -p $C/main && tar xJf $C/bins_main.tar.xz -C $C/main && echo unpacked
t0=$SECONDS; B=$C/main; D=$C/data
L=$OUT/logs; mkdir -p $L
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.sm,power.limit,power.draw,pstate --format=csv
nvidia-smi -q -d PERFORMANCE,CLOCK,POWER > $L/smi_q_before.txt 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_event_reasons.active \
  --format=csv,noheader -lms 100 > $L/clocks.csv 2>$L/clocks.err &
SAMP=$!
mark() { echo "$(date +%H:%M:%S.%N | cut -c1-12) $*" >> $L/marks.txt; }
sleep 2
mark bench_start
timeout 90 $B/bench_kernels --batch 256 --dtype bf16 2>&1 | while IFS= read -r l; do echo "$(date +%H:%M:%S.%N | cut -c1-12) $l"; done > $L/bench_bs256.txt
mark bench_end
echo "bench done ($((SECONDS-t0)) s)"; grep -E "attention (f|b)wd cudnn |gelu bwd|matmul fwd fc1" $L/bench_bs256.txt
sleep 2
mark step_start
BUILD_DIR=$B timeout 200 bash run_benchmark.sh --no-build --np 1 --precision bf16 --plugins torch_ddp_fp16 \
  --batch-sizes "256" --steps 300 --warmup 5 --profile --name long256 > $L/long256.txt 2>&1
echo "long run rc=$? ($((SECONDS-t0)) s)"
mark step_end
kill $SAMP
grep -E "^\| throughput|attention_|gelu_|matmul_|step, median" results/long256/summary.md | head -12
cp results/long256/summary.md $L/long256.md 2>/dev/null
nvidia-smi -q -d PERFORMANCE,CLOCK,POWER > $L/smi_q_after.txt 2>&1
python3 - "$L" <<'PY'
import sys, csv, datetime
L = sys.argv[1]
marks = {}
for line in open(f"{L}/marks.txt"):
    t, name = line.split()
    marks[name] = t
def sec(t):
    h, m, s = t.split(":"); return int(h) * 3600 + int(m) * 60 + float(s)
rows = []
for r in csv.reader(open(f"{L}/clocks.csv")):
    if len(r) < 6: continue
    try:
        t = r[0].strip().split(" ")[1]
        rows.append((sec(t), float(r[1].split()[0]), float(r[3].split()[0]), r[5].strip()))
    except Exception: pass
# attention lines of the bench, by their timestamps
bench = [l.rstrip("\n") for l in open(f"{L}/bench_bs256.txt")]
def window(a, b, label):
    sel = [x for x in rows if a <= x[0] <= b]
    if not sel: print(label, "no samples"); return
    cl = sorted(x[1] for x in sel); pw = sorted(x[2] for x in sel)
    reasons = {}
    for x in sel: reasons[x[3]] = reasons.get(x[3], 0) + 1
    print(f"{label}: {len(sel)} samples, SM clock median {cl[len(cl)//2]:.0f} MHz (min {cl[0]:.0f}, max {cl[-1]:.0f}), "
          f"power median {pw[len(pw)//2]:.0f} W (max {pw[-1]:.0f}); reasons {reasons}")
prev = sec(marks["bench_start"])
for l in bench:
    t = sec(l.split()[0]); name = " ".join(l.split()[1:4])
    if any(k in l for k in ("matmul fwd fc1", "matmul bwd fc2 (dinp+dW)", "attention fwd cudnn ", "attention bwd cudnn +db", "gelu bwd +db", "layernorm bwd (dinp+=)")):
        window(prev, t, "bench " + name)
    prev = t
window(sec(marks["step_start"]) + 4, sec(marks["step_end"]) - 2, "300-step run at batch 256")
PY
for k in 1 2; do
  timeout 60 $B/test_kernels_gpu_addbroken --run_test=add_gradient_now_and_deferred --report_level=short > $L/addbroken_$k.txt 2>&1
  echo "add_gradient always accumulating, run $k rc=$? (must fail)"; grep -E "error" $L/addbroken_$k.txt | cut -c1-220 | head -4
done
echo "total $((SECONDS-t0)) s"
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
