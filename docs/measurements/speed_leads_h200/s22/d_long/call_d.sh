#!/usr/bin/env bash
# Call D (session 22): binaries of 0200a28. The GPU power test (relaxed sampling bound); how often the energy
# counter steps and what an NVML read costs; 300 measured steps at batch 32 and 256 (stretches of ~2.5 s and
# ~17 s, long enough for the counter) with the GEMM tuning cache of call C.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=.devcarry78
tar xJf $C/bins_main.tar.xz -C $C/main && echo unpacked
t0=$SECONDS; B=$C/main; D=$C/data
L=$OUT/logs; mkdir -p $L
PY=/opt/torch/.venv/bin/python3; [ -x $PY ] || PY=python3
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e \
  timeout 120 $B/test_e2e_gpu --run_test=benchmark_measures_the_gpus_power --log_level=message > $L/e2e_power.txt 2>&1
echo "e2e power test rc=$? ($((SECONDS-t0)) s)"; grep -E "power |measured steps|error|No errors|failure" $L/e2e_power.txt | cut -c1-250 | head -6
timeout 60 $PY $C/call/counter_probe.py > $L/counter_probe.txt 2>&1
echo "counter probe rc=$? ($((SECONDS-t0)) s)"; cat $L/counter_probe.txt | cut -c1-300
rm -rf results/long; mkdir -p results/long; cp $D/gemm_tuning.tsv results/long/
BUILD_DIR=$B timeout 200 bash run_benchmark.sh --no-build --np 1 --precision bf16 --plugins torch_ddp_fp16 \
  --batch-sizes "32 256" --steps 300 --warmup 10 --name long > $L/long.txt 2>&1
echo "300-step runs rc=$? ($((SECONDS-t0)) s)"; grep -E "throughput [0-9]|GPU power|GEMM tuning" $L/long.txt | cut -c1-260
grep -E "throughput \(|GPU power, mean|SM clock, median|held at the power|energy per image" results/long/summary.md
cp results/long/summary.md $L/long.md; cp -r results/long $L/long_runs 2>/dev/null
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
