#!/usr/bin/env bash
# The GPU checks, for a GPU machine that receives binaries built elsewhere
# (GPU_MACHINE.md: build on the build machine, run there). From the
# repository root:
#
#   bash tests/gpu/gpu_machine_checks.sh BIN_DIR DATA_DIR [odd] [units] [tests] [hf] [bench] [zero] [gemini] [gemini_threads] [hybrid] [grid] [speed] [demo]
#
# BIN_DIR holds vit_hpc, vit_results and the GPU test executables
# (test_core_gpu, test_kernels_gpu, test_model_gpu, test_comm_gpu,
# test_e2e_gpu; vit_pipeline_timeline for the hybrid stage); DATA_DIR holds the HDF5 files they read (beans_64.h5,
# beans_48.h5 raw with a test split, beans_test_224.h5 raw, beans_224.h5 for
# the demo). Logs go to $OUT (or ./gpu_logs). Each named stage runs in turn:
#   odd    tests/hf/odd_model_predict.py: predict on issue 8's odd model, 20
#          runs per attention path (run it first on a fresh machine), bf16, and
#          once per CUDA_VISIBLE_DEVICES choice
#   units  the GPU unit suites: core (copies complete, allocations on the
#          chosen GPU), kernels vs CPU reference, the whole model vs the CPU
#          model (debug synchronisation on)
#   tests  NCCL/MPI communicators, end to end: 1 vs 2 ranks for
#          torch_ddp/torch_ddp_fp16, fp16 overflow skip, bf16 head size 12,
#          low_level_zero, gemini (offload 0/1) and hybrid_parallel parity
#   hf     tests/hf/hf_interop.py: logits against transformers, both ways
#   bench  images/s and peak memory of ViT-B/16 bf16 at batch 32/64/256, and
#          the original example's grid (plugins x batch 8, 32)
#   zero   torch_ddp_fp16 vs low_level_zero stage 1/2 (bf16, batch 8/32/256)
#          on 1 GPU and on every GPU
#   gemini torch_ddp_fp16 and low_level_zero stage 2 vs gemini with offload 0
#          and 1 (bf16, batch 8/32/256) on 1 GPU and on every GPU; the
#          issue 12 targets are read off the tables (1 GPU, batch 32,
#          offload 1: peak memory <= 25% and throughput >= 80% of
#          torch_ddp_fp16's; every GPU, offload 0: throughput >= 90%)
#   gemini_threads  issue 12: gemini offload 1 at batch 32 with the OpenMP
#          team size and wait policy varied (CPU AdamW per chunk, throughput)
#   hybrid hybrid_parallel on 2 GPUs (nvidia-h200-x2): tp2 and pp2 (4 micro-batches)
#          against torch_ddp (fp32) and torch_ddp_fp16 (bf16) end to end, then
#          the benchmark of tp2 and pp2 beside torch_ddp_fp16 (bf16, batch 8/32/256
#          per data-parallel group), the measured 1F1B timeline of pp2 (ViT-B/16,
#          bf16, 4 and 8 micro-batches of batch 32) and the original example's
#          grid (every plugin, batch 8 and 32, plus 256) on every GPU from one run
#   grid   the original example's grid on every GPU (every plugin, batch 8/32/256)
#          and the pp2 1F1B timeline
#   speed  vit_hpc (op profile; the default beside +recompute_gelu,
#          +recompute_gelu+recompute_norm, +recompute,
#          +no_cuda_graph, +no_gemm_autotune, +no_gemm_autotune_wide, +cudnn_attention_backward,
#          +mma_attention_backward and +cudnn_attention_forward) against PyTorch eager/compile
#          at batch 32/256 on one GPU, and data-parallel scaling on every GPU
#   demo   configs/demo.yaml on Beans at 224 px
#   resume_recipe  exact resume on the GPU with the weight average and
#          best-model selection on (checkpoint format 2): torch_ddp_fp16 bf16
#          (cuBLAS attention) 40 steps straight against 20 + stop + 20, 1 rank
#          and 2 ranks (NCCL on 2 GPUs, MPI when they share one): the exported
#          weights compared byte for byte, and the step and eval lines
#   recipe the training recipe's targets (issue 15), 3 seeds each (RECIPE_SEEDS,
#          RECIPE_LAYOUTS): configs/demo.yaml on 1 GPU, and the original
#          demo's global batch 64 (4 GPUs x 16 with the demo's lr 1e-4 x 4) as
#          1 GPU x 64 with lr 4e-4 (no batch statistics in a ViT: the same
#          update); the runs go one after another (wall time of a run alone);
#          seeds interleaved so a cut-short call still has both layouts;
#          prints test accuracy (last epoch and best-validation epoch) and
#          wall time per run, then mean and spread per layout
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
        timeout 900 "$BIN/test_e2e_gpu" --report_level=short --log_level=message > "$LOG/e2e_gpu.txt" 2>&1
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
    gemini)
      # torch_ddp_fp16 and low_level_zero:2 against gemini offload 0 and 1
      # (bf16), batch 8, 32 and 256 per GPU, on 1 GPU and on every GPU.
      for np in 1 $(nvidia-smi -L | wc -l); do
        stage "benchmark: torch_ddp_fp16 vs low_level_zero 2 vs gemini offload 0/1, bf16, $np GPU(s)"
        BUILD_DIR=$BIN bash run_benchmark.sh --no-build --np "$np" --precision bf16 \
          --plugins "torch_ddp_fp16 low_level_zero:2 gemini:0 gemini:1" --batch-sizes "8 32 256" --steps 20 \
          --name "bench_gemini_np$np" > "$LOG/bench_gemini_np$np.txt" 2>&1
        echo "rc=$?"; cp "results/bench_gemini_np$np/summary.md" "$LOG/bench_gemini_np$np.md" 2>/dev/null
        grep -A12 "^### " "$LOG/bench_gemini_np$np.txt" | grep -E "^###|throughput|memory"
        grep -h "gemini:" "$LOG/bench_gemini_np$np.txt" | sort -u | head -4
        [ "$np" = "$(nvidia-smi -L | wc -l)" ] && break
      done
      # gemini's leanest form on one GPU (optimizer states and parameters on
      # the host, activations recomputed) at batch 32, and the per-chunk
      # timelines of the batch-32 runs.
      stage "gemini offload 1 + parameter offload 1 + recompute, batch 32, 1 GPU"
      mpirun --bind-to none -np 1 "$BIN/vit_hpc" configs/benchmark.yaml --set run.device=cuda \
        --set plugin.name=gemini --set plugin.precision=bf16 --set plugin.offload_optim_frac=1 \
        --set plugin.offload_param_frac=1 --set train.recompute=true --set train.batch_size=32 \
        --set run.output_dir=results/bench_gemini_lean --set run.name=gemini_lean_bs32 --set run.progress=false \
        > "$LOG/bench_gemini_lean.txt" 2>&1
      echo "rc=$?"; grep -E "throughput|gemini" "$LOG/bench_gemini_lean.txt" | head -4
      (cd results && tar czf "$LOG/gemini_timelines.tgz" bench_gemini_np*/gemini_*bs32/timeline_rank_*.txt \
        bench_gemini_lean/*/timeline_rank_*.txt 2>/dev/null)
      ;;
    gemini_threads)
      # Issue 12: the overlapped CPU AdamW took 4.0-4.3 ms a chunk on its
      # worker thread against 2.4-2.9 ms on the main thread in an earlier
      # session, on another machine and binary
      # (docs/measurements/gemini_timeline_offload1_bs32{,_overlap}.txt).
      # gemini offload 1 at batch 32 on 1 GPU with the OpenMP team size and
      # wait policy varied, and the synchronous update (plugin.cpu_update) in
      # the same call: throughput and the mean CPU AdamW span per chunk.
      # Measured 2026-12-01 (docs/measurements/gemini_threads_h200/): 3.3-5.8
      # ms a chunk with the static per-thread split (static_schedule/; the
      # synchronous update no faster than the overlapped one, the update at
      # 105% of the streaming bound when alone); 3.6 ms with the dynamic
      # schedule and blocking GPU waits (dynamic_schedule/).
      cores=$(nproc)
      if [ -x "$BIN/bench_adamw_cpu" ]; then
        # The host's bound: the CPU AdamW against a streaming loop with its
        # traffic, on about one ViT-B/16 chunk of gemini (14 M elements).
        stage "CPU AdamW against the same traffic streamed, 14 M elements ($cores cores)"
        "$BIN/bench_adamw_cpu" 14680064 7
      fi
      stage "gemini offload 1, batch 32, 1 GPU: CPU AdamW per chunk against OpenMP threads and wait policy ($cores cores)"
      echo "OpenMP environment: $(env | grep -E '^(OMP|GOMP|KMP)_' | tr '\n' ' ')"
      for v in "default|" "threads$((cores - 1))|--set run.cpu_threads=$((cores - 1))" \
               "threads$((cores / 2))|--set run.cpu_threads=$((cores / 2))" "passive|-x OMP_WAIT_POLICY=passive" \
               "synchronous|--set plugin.cpu_update=synchronous"; do
        name=${v%%|*}; opt=${v#*|}
        [ -d "results/gemini_threads/$name" ] && continue  # cores - 1 = cores / 2 on a 2-core machine
        mpiopt=(); sets=()
        case "$opt" in -x*) read -ra mpiopt <<< "$opt" ;; ?*) read -ra sets <<< "$opt" ;; esac
        mpirun --bind-to none "${mpiopt[@]}" -np 1 "$BIN/vit_hpc" configs/benchmark.yaml --set run.device=cuda \
          --set plugin.name=gemini --set plugin.precision=bf16 --set plugin.offload_optim_frac=1 \
          --set train.batch_size=32 --set run.output_dir=results/gemini_threads --set run.name="$name" \
          --set run.progress=false "${sets[@]}" > "$LOG/gemini_threads_$name.txt" 2>&1 &
        job=$!
        # Which cores each thread of the rank may run on, sampled while it
        # trains (threads pinned to one core would explain a slow update).
        affinity=""
        while kill -0 "$job" 2>/dev/null; do
          pid=$(pgrep -n -x vit_hpc)
          [ -n "$pid" ] && a=$(cat /proc/"$pid"/task/*/status 2>/dev/null | awk '/^Cpus_allowed_list/ {print $2}' |
            sort | uniq -c | awk '{printf "%s thread(s) on %s; ", $1, $2}') && [ ${#a} -gt ${#affinity} ] && affinity=$a
          sleep 1
        done
        wait "$job"
        rc=$?
        echo "$name: thread affinity: ${affinity:-?}"
        tl=$(ls results/gemini_threads/"$name"/timeline_rank_0.txt 2>/dev/null)
        adam=$([ -n "$tl" ] && awk '/cpu adamw/ {s += $3; n++} END {if (n) printf "%.2f ms x %d", s / n, n}' "$tl")
        printf "%-10s rc=%s  %s  cpu adamw per chunk: %s\n" "$name" "$rc" \
          "$(grep -m1 -E 'images/s' "$LOG/gemini_threads_$name.txt")" "${adam:-?}"
        [ -n "$tl" ] && cp "$tl" "$LOG/gemini_threads_timeline_$name.txt"
      done
      ;;
    hybrid)
      gpus=$(nvidia-smi -L | wc -l)
      [ "$gpus" -lt 2 ] && echo "hybrid: needs 2 GPUs, found $gpus (the 2 ranks would share one through MPI)"
      stage "test_e2e_gpu: hybrid_parallel tp2/pp2 vs torch_ddp (fp32) and torch_ddp_fp16 (bf16)"
      VIT_TEST_BIN=$BIN VIT_TEST_SOURCE=$PWD VIT_TEST_DATA=$DATA/beans_64.h5 VIT_TEST_SCRATCH=/tmp \
        timeout 600 "$BIN/test_e2e_gpu" --report_level=short --log_level=message \
        --run_test=hybrid_parallel_tp2_and_pp2_match_torch_ddp_in_fp32,hybrid_parallel_tp2_and_pp2_match_torch_ddp_fp16_in_bf16 \
        > "$LOG/e2e_gpu_hybrid.txt" 2>&1
      echo "rc=$?"; grep -E "failure|passed|error|vs torch_ddp" "$LOG/e2e_gpu_hybrid.txt" | tail -12
      stage "benchmark: torch_ddp_fp16 vs hybrid_parallel tp2, pp2 (bf16), 2 GPUs"
      BUILD_DIR=$BIN bash run_benchmark.sh --no-build --np 2 --precision bf16 \
        --plugins "torch_ddp_fp16 hybrid_parallel:tp2pp1 hybrid_parallel:tp1pp2mb4" --batch-sizes "8 32 256" \
        --steps 20 --name bench_hybrid_np2 > "$LOG/bench_hybrid_np2.txt" 2>&1
      echo "rc=$?"; cp results/bench_hybrid_np2/summary.md "$LOG/bench_hybrid_np2.md" 2>/dev/null
      grep -A12 "^### " "$LOG/bench_hybrid_np2.txt" | grep -E "^###|throughput|memory"
      for mb in 4 8; do
        stage "1F1B timeline: pp2, $mb micro-batches, ViT-B/16 bf16, batch 32"
        timeout 300 mpirun --bind-to none -np 2 "$BIN/vit_pipeline_timeline" configs/benchmark.yaml \
          --set run.device=cuda --set plugin.name=hybrid_parallel --set plugin.precision=bf16 \
          --set plugin.pp_size=2 --set plugin.num_microbatches=$mb --set train.batch_size=32 \
          --set benchmark.warmup_steps=5 --set benchmark.steps=20 --set run.name=timeline_pp2_mb$mb \
          > "$LOG/timeline_pp2_mb$mb.txt" 2>&1
        echo "rc=$?"; grep -E "^\||^rank|^1F1B|^last" "$LOG/timeline_pp2_mb$mb.txt"
      done
      stage "benchmark: the original grid (every plugin, batch 8, 32, 256) on $gpus GPUs"
      BUILD_DIR=$BIN bash run_benchmark.sh --no-build --np "$gpus" --batch-sizes "8 32 256" \
        --name "bench_grid_np$gpus" > "$LOG/bench_grid_np$gpus.txt" 2>&1
      echo "rc=$?"; cp "results/bench_grid_np$gpus/summary.md" "$LOG/bench_grid_np$gpus.md" 2>/dev/null
      grep -A12 "^### " "$LOG/bench_grid_np$gpus.txt" | grep -E "^###|throughput|memory"
      ;;
    grid)
      # The original example's grid on every GPU from one run: every plugin
      # (hybrid_parallel as tp2 and as pp2 with 4 micro-batches), batch 8, 32
      # and 256 per data-parallel group; the 1F1B timeline of pp2 on the GPU.
      gpus=$(nvidia-smi -L | wc -l)
      stage "benchmark: every plugin, batch 8, 32, 256, on $gpus GPUs"
      BUILD_DIR=$BIN bash run_benchmark.sh --no-build --np "$gpus" --batch-sizes "8 32 256" --precision bf16 \
        --plugins "torch_ddp torch_ddp_fp16 low_level_zero:1 low_level_zero:2 gemini:0 gemini:1 hybrid_parallel:tp2pp1 hybrid_parallel:tp1pp2mb4" \
        --name "bench_grid_np$gpus" > "$LOG/bench_grid_np$gpus.txt" 2>&1
      echo "rc=$?"; cp "results/bench_grid_np$gpus/summary.md" "$LOG/bench_grid_np$gpus.md" 2>/dev/null
      grep -A12 "^### " "$LOG/bench_grid_np$gpus.txt" | grep -E "^###|throughput|memory"
      if [ "$gpus" -ge 2 ]; then
        for mb in 4 8; do
          stage "1F1B timeline: pp2, $mb micro-batches, ViT-B/16 bf16, batch 32"
          timeout 300 mpirun --bind-to none -np 2 "$BIN/vit_pipeline_timeline" configs/benchmark.yaml \
            --set run.device=cuda --set plugin.name=hybrid_parallel --set plugin.precision=bf16 \
            --set plugin.pp_size=2 --set plugin.num_microbatches=$mb --set train.batch_size=32 \
            --set benchmark.warmup_steps=5 --set benchmark.steps=20 --set run.name=timeline_pp2_mb$mb \
            > "$LOG/timeline_pp2_mb$mb.txt" 2>&1
          echo "rc=$?"; grep -E "^\||^rank|^1F1B|^last|bubble" "$LOG/timeline_pp2_mb$mb.txt" | head -12
        done
      fi
      ;;
    speed)
      # Issue 14's table from one call: vit_hpc (bf16, op profile) and PyTorch
      # (eager, torch.compile) at batch 32 and 256 on one GPU, then vit_hpc's
      # data-parallel scaling on every GPU.
      gpus=$(nvidia-smi -L | wc -l)
      # Beside the default: the GELU recompute, it with the LayerNorm
      # recompute, and the whole-block recompute (the memory row), the step without CUDA graphs, without GEMM tuning
      # and with cuDNN's attention backward or forward (what each gives).
      stage "speed: vit_hpc torch_ddp_fp16 bf16 (+ variants) + PyTorch eager/compile, batch 32 and 256, 1 GPU"
      BUILD_DIR=$BIN bash run_benchmark.sh --no-build --np 1 --precision bf16 \
        --plugins "torch_ddp_fp16 torch_ddp_fp16+recompute_gelu torch_ddp_fp16+recompute_gelu+recompute_norm torch_ddp_fp16+recompute torch_ddp_fp16+no_cuda_graph torch_ddp_fp16+no_gemm_autotune torch_ddp_fp16+no_gemm_autotune_wide torch_ddp_fp16+cudnn_attention_backward torch_ddp_fp16+mma_attention_backward torch_ddp_fp16+cudnn_attention_forward" \
        --batch-sizes "32 256" --steps 30 --warmup 5 --profile --with-pytorch --name speed_np1 \
        > "$LOG/speed_np1.txt" 2>&1
      echo "rc=$?"; cp results/speed_np1/summary.md "$LOG/speed_np1.md" 2>/dev/null
      grep -E "throughput|arithmetic|CUDA graphs|GEMM tuning|pytorch_" "$LOG/speed_np1.txt" | head -60
      if [ "$gpus" -ge 2 ]; then
        stage "speed: vit_hpc torch_ddp_fp16 bf16, batch 32 and 256 per GPU, $gpus GPUs"
        BUILD_DIR=$BIN bash run_benchmark.sh --no-build --np "$gpus" --plugins torch_ddp_fp16 --precision bf16 \
          --batch-sizes "32 256" --steps 30 --warmup 5 --name "speed_np$gpus" > "$LOG/speed_np$gpus.txt" 2>&1
        echo "rc=$?"; cp "results/speed_np$gpus/summary.md" "$LOG/speed_np$gpus.md" 2>/dev/null
        grep -E "throughput" "$LOG/speed_np$gpus.txt" | head -4
      fi
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
      stage "recipe: configs/demo.yaml (1 GPU) and global batch 64 (1 x 64, lr 4e-4), seeds ${RECIPE_SEEDS:-1 2 3}"
      declare -A accs=()
      for seed in ${RECIPE_SEEDS:-1 2 3}; do
        for layout in ${RECIPE_LAYOUTS:-demo gb64}; do
          extra=""
          [ "$layout" = gb64 ] && extra="--set train.batch_size=64 --set train.lr=4e-4 --set train.lr_scale_with_world=false"
          name="recipe_${layout}_s$seed"
          start=$SECONDS
          # shellcheck disable=SC2086
          mpirun --bind-to none -np 1 "$BIN/vit_hpc" configs/demo.yaml --set data.path="$DATA/beans_224.h5" \
            --set run.name="$name" --set run.output_dir=results --set run.progress=false --set run.seed="$seed" $extra \
            ${RECIPE_SET:-} > "$LOG/$name.txt" 2>&1
          rc=$? wall=$((SECONDS - start))
          last=$(grep -E '^test: .*(last epoch|weight average)' "$LOG/$name.txt" | grep -o 'accuracy [0-9.]*' | head -1 | cut -d' ' -f2)
          best=$(grep -E '^test: .*best validation epoch' "$LOG/$name.txt" | grep -o 'accuracy [0-9.]*' | head -1 | cut -d' ' -f2)
          echo "$layout seed $seed: rc=$rc wall ${wall} s, test accuracy ${last:-?} (last epoch), ${best:-?} (best validation epoch)"
          accs[$layout]="${accs[$layout]:-} ${last:-nan}"
          cp -r "results/$name" "$LOG/" 2>/dev/null
        done
      done
      for layout in ${RECIPE_LAYOUTS:-demo gb64}; do
        echo "${accs[$layout]}" | awk -v l="$layout" '{s=0; for(i=1;i<=NF;i++) s+=$i; m=s/NF; v=0; for(i=1;i<=NF;i++) v+=($i-m)^2;
          mn=$1; mx=$1; for(i=1;i<=NF;i++){if($i<mn)mn=$i; if($i>mx)mx=$i}
          printf "%s: mean test accuracy %.4f, sd %.4f, range %.4f-%.4f over %d seeds\n", l, m, sqrt(v/NF), mn, mx, NF}'
      done
      ;;
    resume_recipe)
      stage "resume_recipe: exact resume with EMA and keep_best on the GPU"
      R=/tmp/rr; rm -rf $R; mkdir -p $R
      for np in 1 2; do
        common="--set data.path=$DATA/beans_64.h5 --set run.output_dir=$R --set run.progress=false --set run.device=cuda
          --set plugin.name=torch_ddp_fp16 --set plugin.precision=bf16 --set model.attention=cublas
          --set train.batch_size=64 --set train.steps=40 --set train.ema_decay=0.9 --set eval.keep_best=true"
        # shellcheck disable=SC2086
        mpirun --bind-to none -np $np "$BIN/vit_hpc" tests/train/e2e_base.yaml $common --set run.name=straight$np \
          --set checkpoint.export_hf=$R/straight${np}_export > "$LOG/rr_straight$np.txt" 2>&1
        echo "np$np straight: rc=$?"
        for part in 1 2; do
          # shellcheck disable=SC2086
          mpirun --bind-to none -np $np "$BIN/vit_hpc" tests/train/e2e_base.yaml $common --set run.name=resumed$np \
            --set checkpoint.dir=$R/ck$np --set checkpoint.stop_after_steps=20 \
            --set checkpoint.export_hf=$R/resumed${np}_export >> "$LOG/rr_resumed$np.txt" 2>&1
          echo "np$np part $part: rc=$? (75: stopped after saving)"
        done
        python3 - "$R" "$np" <<'PY'
import json, sys
R, n = sys.argv[1], sys.argv[2]
def lines(run, t):
    out = []
    for l in open(f"{R}/{run}/rank_0.jsonl"):
        j = json.loads(l)
        if j.get("type") == t:
            out.append({k: j[k] for k in ("step", "loss", "grad_norm", "epoch", "split", "weights", "accuracy") if k in j})
    return out
a, b = f"straight{n}", f"resumed{n}"
ev_a, ev_b = lines(a, "eval"), lines(b, "eval")
st_a, st_b = lines(a, "step"), lines(b, "step")
same_w = open(f"{R}/{a}_export/model.safetensors", "rb").read() == open(f"{R}/{b}_export/model.safetensors", "rb").read()
print(f"np{n}: {len(st_a)} steps, step lines {'identical' if st_a == st_b else 'DIFFER'}; "
      f"{len(ev_a)} eval lines ({sorted(set(e.get('weights', '?') for e in ev_a))}) {'identical' if ev_a == ev_b else 'DIFFER'}; "
      f"exported weights {'identical' if same_w else 'DIFFER'}")
PY
        grep -h "^resume:\|^test:\|^checkpoint" "$LOG/rr_resumed$np.txt" | head -6
      done
      ;;
    *) echo "unknown stage $what"; exit 2 ;;
  esac
done
