#!/usr/bin/env bash
# The GPU checks, for a GPU machine that receives binaries built elsewhere
# (GPU_MACHINE.md: build on the build machine, run there). From the
# repository root:
#
#   bash tests/gpu/gpu_machine_checks.sh BIN_DIR DATA_DIR [odd] [units] [tests] [hf] [bench] [zero] [demo]
#
# BIN_DIR holds vit_hpc, vit_results and the GPU test executables
# (test_core_gpu, test_kernels_gpu, test_model_gpu, test_comm_gpu,
# test_e2e_gpu); DATA_DIR holds the HDF5 files they read (beans_64.h5,
# beans_48.h5 raw with a test split, beans_test_224.h5 raw, beans_224.h5 for
# the demo). Logs go to $OUT (or ./gpu_logs). Each named stage runs in turn:
#   odd    tests/hf/odd_model_predict.py: predict on issue 8's odd model, 20
#          runs per attention path (run it first on a fresh machine), bf16, and
#          once per CUDA_VISIBLE_DEVICES choice
#   units  the GPU unit suites: core (copies complete, allocations on the
#          chosen GPU), kernels vs CPU reference, the whole model vs the CPU
#          model (debug synchronisation on)
#   tests  NCCL/MPI communicators, end to end: 1 vs 2 ranks for
#          torch_ddp/torch_ddp_fp16, fp16 overflow skip, bf16 head size 12
#   hf     tests/hf/hf_interop.py: logits against transformers, both ways
#   bench  images/s and peak memory of ViT-B/16 bf16 at batch 32/64/256, and
#          the original example's grid (plugins x batch 8, 32)
#   zero   torch_ddp_fp16 vs low_level_zero stage 1/2 (bf16, batch 8/32/256)
#          on 1 GPU and on every GPU
#   demo   configs/demo.yaml on Beans at 224 px
#   recipe the training recipe's targets (issue 15), 3 seeds each (RECIPE_SEEDS):
#          configs/demo.yaml on 1 GPU, and the original demo's global batch
#          64 (4 GPUs x 16 with lr x 4) as 1 GPU x 16 x grad_accum 4 with
#          lr 8e-4; prints test accuracy (last epoch and best-validation
#          epoch) and wall time per run, then mean and spread
set -uo pipefail
BIN=$(realpath "$1")
DATA=$(realpath "$2")
shift 2
LOG=${OUT:-$PWD/gpu_logs}
mkdir -p "$LOG"

# cuDNN and NCCL of the Python wheels (versioned names only), the toolkit's cuBLAS.
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if ldd "$BIN/vit_hpc" | grep -q 'not found'; then
  echo "missing libraries: $(ldd "$BIN/vit_hpc" | grep 'not found' | awk '{print $1}' | tr '\n' ' ')"
  if [ -f "$DATA/libfb.tar.xz" ]; then
    tar xJf "$DATA/libfb.tar.xz" -C /tmp && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/tmp/libfb
    echo "using the carried fallbacks in /tmp/libfb"
  fi
fi
ldd "$BIN/vit_hpc" | grep 'not found' && exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

stage() { echo; echo "=== $1 ($(date +%T))"; }
for what in "$@"; do
  case "$what" in
    odd)
      stage "odd model: vit_hpc predict against transformers, repeated"
      PYTHONUNBUFFERED=1 timeout 400 python3 tests/hf/odd_model_predict.py --vit-hpc "$BIN/vit_hpc" \
        --data "$DATA/beans_48.h5" --work /tmp/odd --runs "${ODD_RUNS:-20}" > "$LOG/odd_predict.txt" 2>&1
      echo "rc=$?"; grep -E "FAIL|ZERO" "$LOG/odd_predict.txt" | head -5; tail -4 "$LOG/odd_predict.txt"
      ;;
    units)
      stage "test_core_gpu"
      timeout 120 "$BIN/test_core_gpu" --report_level=short > "$LOG/core_gpu.txt" 2>&1
      echo "rc=$?"; grep -E "failure|passed|error|stale|chosen|SKIPPED" "$LOG/core_gpu.txt" | tail -6
      stage "test_kernels_gpu"
      timeout 300 "$BIN/test_kernels_gpu" --report_level=short > "$LOG/kernels_gpu.txt" 2>&1
      echo "rc=$?"; grep -E "failure|passed|error" "$LOG/kernels_gpu.txt" | tail -5
      stage "test_model_gpu"
      timeout 400 "$BIN/test_model_gpu" --report_level=short > "$LOG/model_gpu.txt" 2>&1
      echo "rc=$?"; grep -E "failure|passed|error|FAIL" "$LOG/model_gpu.txt" | tail -5
      sed -n '/^whole model/,$p' "$LOG/model_gpu.txt"
      ;;
    tests)
      for np in 1 2; do
        stage "test_comm_gpu np$np"
        timeout 120 mpirun --bind-to none -np $np "$BIN/test_comm_gpu" --report_level=short > "$LOG/comm_gpu_np$np.txt" 2>&1
        echo "rc=$?"; grep -E "failure|passed|error|share" "$LOG/comm_gpu_np$np.txt" | sort | uniq -c | tail -6
      done
      stage "test_e2e_gpu"
      VIT_TEST_BIN=$BIN VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$DATA/beans_64.h5 VIT_TEST_SCRATCH=/tmp \
        timeout 300 "$BIN/test_e2e_gpu" --report_level=short --log_level=message > "$LOG/e2e_gpu.txt" 2>&1
      echo "rc=$?"; grep -E "failure|passed|error" "$LOG/e2e_gpu.txt" | tail -8
      for f in /tmp/scratch_e2e_gpu/gpu_*; do
        [ -f "$f/rank_0.jsonl" ] && echo "$(basename "$f"): $(grep -o '"loss":[0-9.e+-]*' "$f/rank_0.jsonl" | cut -d: -f2 | head -6 | tr '\n' ' ')"
      done
      ;;
    hf)
      stage "hf_interop"
      PATH=$BIN:$PATH timeout 400 python3 tests/hf/hf_interop.py --vit-hpc "$BIN/vit_hpc" \
        --data "$DATA/beans_test_224.h5" --work /tmp/hf > "$LOG/hf_interop.txt" 2>&1
      echo "rc=$?"; tail -8 "$LOG/hf_interop.txt"
      ;;
    bench)
      stage "benchmark: torch_ddp_fp16 bf16, batch 32 64 256, 1 GPU"
      BUILD_DIR=$BIN bash run_benchmark.sh --no-build --np 1 --plugins torch_ddp_fp16 --precision bf16 \
        --batch-sizes "32 64 256" --steps 30 --name bench_bf16 > "$LOG/bench_bf16.txt" 2>&1
      echo "rc=$?"; cp results/bench_bf16/summary.md "$LOG/bench_bf16.md" 2>/dev/null; grep -A12 "^### " "$LOG/bench_bf16.txt" | head -40
      stage "benchmark: the original grid (batch 8, 32), 1 GPU"
      BUILD_DIR=$BIN bash run_benchmark.sh --no-build --np 1 --batch-sizes "8 32" --name bench_grid \
        > "$LOG/bench_grid.txt" 2>&1
      echo "rc=$?"; cp results/bench_grid/summary.md "$LOG/bench_grid.md" 2>/dev/null; grep -A12 "^### " "$LOG/bench_grid.txt" | head -40
      ;;
    zero)
      # torch_ddp_fp16 against low_level_zero stage 1 and 2 (bf16), batch 8, 32
      # and 256 per GPU, on 1 GPU and on every GPU: one run folder and table each.
      for np in 1 $(nvidia-smi -L | wc -l); do
        stage "benchmark: torch_ddp_fp16 vs low_level_zero 1/2, bf16, $np GPU(s)"
        BUILD_DIR=$BIN bash run_benchmark.sh --no-build --np "$np" --precision bf16 \
          --plugins "torch_ddp_fp16 low_level_zero:1 low_level_zero:2" --batch-sizes "8 32 256" --steps 20 \
          --name "bench_zero_np$np" > "$LOG/bench_zero_np$np.txt" 2>&1
        echo "rc=$?"; cp "results/bench_zero_np$np/summary.md" "$LOG/bench_zero_np$np.md" 2>/dev/null
        grep -A12 "^### " "$LOG/bench_zero_np$np.txt" | grep -E "^###|throughput|memory"
        [ "$np" = "$(nvidia-smi -L | wc -l)" ] && break
      done
      ;;
    demo)
      stage "demo: configs/demo.yaml, ViT-B/16 from scratch on Beans 224"
      start=$SECONDS
      mpirun --bind-to none -np 1 "$BIN/vit_hpc" configs/demo.yaml --set data.path="$DATA/beans_224.h5" \
        --set run.name=demo_gpu --set run.output_dir=results --set run.progress=false \
        > "$LOG/demo.txt" 2>&1
      echo "rc=$? wall $((SECONDS - start)) s"; grep -E "^epoch|^test|vit_hpc|weights" "$LOG/demo.txt" | tail -40
      "$BIN/vit_results" results/demo_gpu > "$LOG/demo.md" 2>&1; cp -r results/demo_gpu "$LOG/" 2>/dev/null
      ;;
    recipe)
      stage "recipe: configs/demo.yaml (1 GPU) and global batch 64 (16 x 4 accumulated, lr 8e-4), seeds ${RECIPE_SEEDS:-1 2 3}"
      for layout in demo gb64; do
        accs=""
        for seed in ${RECIPE_SEEDS:-1 2 3}; do
          extra=""
          [ "$layout" = gb64 ] && extra="--set train.batch_size=16 --set train.grad_accum=4 --set train.lr=8e-4 --set train.lr_scale_with_world=false"
          name="recipe_${layout}_s$seed"
          start=$SECONDS
          # shellcheck disable=SC2086
          mpirun --bind-to none -np 1 "$BIN/vit_hpc" configs/demo.yaml --set data.path="$DATA/beans_224.h5" \
            --set run.name="$name" --set run.output_dir=results --set run.progress=false --set run.seed="$seed" $extra \
            > "$LOG/$name.txt" 2>&1
          rc=$? wall=$((SECONDS - start))
          last=$(grep -E '^test: .*(last epoch|weight average)' "$LOG/$name.txt" | grep -o 'accuracy [0-9.]*' | cut -d' ' -f2)
          best=$(grep -E '^test: .*best validation epoch' "$LOG/$name.txt" | grep -o 'accuracy [0-9.]*' | cut -d' ' -f2)
          echo "$layout seed $seed: rc=$rc wall ${wall} s, test accuracy ${last:-?} (last epoch), ${best:-?} (best validation epoch)"
          accs="$accs ${last:-nan}"
          cp -r "results/$name" "$LOG/" 2>/dev/null
        done
        echo "$accs" | awk -v l="$layout" '{s=0; for(i=1;i<=NF;i++) s+=$i; m=s/NF; v=0; for(i=1;i<=NF;i++) v+=($i-m)^2;
          mn=$1; mx=$1; for(i=1;i<=NF;i++){if($i<mn)mn=$i; if($i>mx)mx=$i}
          printf "%s: mean test accuracy %.4f, sd %.4f, range %.4f-%.4f over %d seeds\n", l, m, sqrt(v/NF), mn, mx, NF}'
      done
      ;;
    *) echo "unknown stage $what"; exit 2 ;;
  esac
done
