#!/usr/bin/env bash
# Call C (session 22): binaries of f739f70 (the power meter reading the energy counter between its steps) and of 8d42167 (vit_hpc_old, no
# meter). The new GPU test; how often the energy counter steps; two alternating
# rounds old / new at batch 32 and 256 (does the sampling thread cost anything?); the README's table
# (gpu_machine_checks.sh speed) with the power rows.
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
C=.devcarry77
tar xJf $C/bins_main.tar.xz -C $C/main && echo unpacked
t0=$SECONDS; B=$C/main; D=$C/data
L=$OUT/logs; mkdir -p $L
PY=/opt/torch/.venv/bin/python3; [ -x $PY ] || PY=python3
env VIT_TEST_BIN=$B VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$PWD/$D/beans_64.h5 VIT_TEST_SCRATCH=/tmp/e2e \
  timeout 120 $B/test_e2e_gpu --run_test=benchmark_measures_the_gpus_power --log_level=message > $L/e2e_power.txt 2>&1
echo "e2e power test rc=$? ($((SECONDS-t0)) s)"; grep -E "power |error|No errors|failure" $L/e2e_power.txt | cut -c1-250 | head -6
grep -h "GPU power" /tmp/e2e/gpu_bench_power*.log /tmp/e2e/*.txt 2>/dev/null | head -2
timeout 60 $PY $C/call/counter_probe.py > $L/counter_probe.txt 2>&1
echo "counter probe rc=$? ($((SECONDS-t0)) s)"; cat $L/counter_probe.txt | cut -c1-300
mkdir -p results/tune
for r in 1 2; do
  for v in old new; do
    n=${v}_$r; bin=vit_hpc; [ $v = old ] && bin=vit_hpc_old
    rm -rf $C/b_$v; mkdir -p $C/b_$v; cp $B/vit_results $C/b_$v/; cp $B/$bin $C/b_$v/vit_hpc
    rm -rf results/$n; mkdir -p results/$n; cp results/tune/gemm_tuning.tsv results/$n/ 2>/dev/null
    BUILD_DIR=$C/b_$v timeout 150 bash run_benchmark.sh --no-build --np 1 --precision bf16 \
      --plugins torch_ddp_fp16 --batch-sizes "32 256" --steps 30 --warmup 5 --name $n > $L/$n.txt 2>&1
    echo "round $r $v rc=$? ($((SECONDS-t0)) s)"; grep -E "^\| throughput" results/$n/summary.md | head -2 | tr '\n' ' '; echo
    grep -E "GPU power" $L/$n.txt | cut -c1-200
    [ -f results/tune/gemm_tuning.tsv ] || cp results/$n/gemm_tuning.tsv results/tune/ 2>/dev/null
    cp results/$n/summary.md $L/$n.md 2>/dev/null
  done
done
rm -rf results/speed_np1; export VIT_GIT_REVISION=f739f70
OUT=$L timeout 380 bash tests/gpu/gpu_machine_checks.sh $B $D speed > $L/table.txt 2>&1
echo "table rc=$? ($((SECONDS-t0)) s)"; grep -E "^### Batch|throughput \(|GPU power, mean|SM clock, median|held at the power|energy per image" $L/speed_np1.md | head -24 | cut -c1-260
grep -E "GPU power|pytorch_" $L/speed_np1.txt | cut -c1-220 | head -30
cp -r results/speed_np1 $L/ 2>/dev/null
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
