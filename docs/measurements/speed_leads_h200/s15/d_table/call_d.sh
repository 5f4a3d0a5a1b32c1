#!/usr/bin/env bash
# Call D (session 15): the README's table on the binaries of 8ccbd79 (gpu_machine_checks.sh speed, now with a
# +gemm_autotune_wide column), after test_kernels_gpu's tuning test (the wider tuning gives the untuned bits).
set -u
export NCCL_NVLS_ENABLE=0
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
t0=$SECONDS; B=.devcarry51/main; D=.devcarry51/data
L=$OUT/logs; mkdir -p $L
timeout 60 $B/test_kernels_gpu --run_test=gemm_tuning_changes_no_bit --log_level=message --report_level=short > $L/kernels_gpu_tuning.txt 2>&1
echo "tuning test rc=$? ($((SECONDS-t0)) s)"; grep -E "GEMM tuning|error" $L/kernels_gpu_tuning.txt | head -5; tail -2 $L/kernels_gpu_tuning.txt
rm -rf results/speed_np1; export VIT_GIT_REVISION=8ccbd79
OUT=$L timeout $((455-(SECONDS-t0))) bash tests/gpu/gpu_machine_checks.sh $B $D speed > $L/table.txt 2>&1
echo "table rc=$? ($((SECONDS-t0)) s)"; grep -E "throughput" $L/table.txt | head -12 | cut -c1-200
cp -r results/speed_np1 $L/ 2>/dev/null
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $L
