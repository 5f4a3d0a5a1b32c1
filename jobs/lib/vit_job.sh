# Shared by the batch scripts in jobs/ and jobs/cpu/: sourced, never run.
#
# Slurm runs a copy of the batch script from its spool folder, so a script
# cannot find the repository from its own path: it starts in the folder it
# was submitted from (submit from the repository root) or reads VIT_ROOT.
#
# Knobs, all environment variables (sbatch passes the submitting shell's
# environment on; or use sbatch --export=ALL,NAME=value):
#   VIT_ROOT         repository root                 (default: the submit folder)
#   VIT_BUILD_DIR    folder holding vit_hpc and vit_results   (default: $VIT_ROOT/build)
#   VIT_RESULTS_DIR  where run folders and summaries go       (default: $VIT_ROOT/results)
#   VIT_CONFIG       experiment spec, relative to VIT_ROOT or absolute (default: per script)
#   VIT_LAUNCHER     srun (default: srun --mpi=$VIT_SRUN_MPI) or mpirun (Open MPI
#                    reads the Slurm allocation itself; VIT_MPIRUN_ARGS adds options)
#   VIT_SRUN_MPI     the srun MPI plugin (default: pmix; "srun --mpi=list" shows them)
#   VIT_PLOTS        1 (default): the summary step also draws plots under
#                    $VIT_RESULTS_DIR/plots/<summary name>/; 0: tables only
#   VIT_RUN_NAME     run name of the demo and multinode jobs (default: <kind>_<job id>)
#   VIT_CHECKPOINT_DIR  training jobs: checkpoint.dir (default: $VIT_RESULTS_DIR/checkpoints/<run name>;
#                    "none": the spec's own checkpoint.dir, which may be empty: then no
#                    checkpoint, and a stopped job is not requeued)
#   VIT_BENCH_*      the benchmark grid: see vit_benchmark_cell below
#
# Preemption and time limits (training jobs, docs/checkpoints.md): the scripts
# ask for `#SBATCH --signal=B:USR1@<seconds>` and `#SBATCH --requeue`. When the
# batch shell gets SIGUSR1 (the time limit is near), SIGTERM (preemption) or
# SIGINT, it forwards SIGUSR1 to the launcher (srun and mpirun pass it on to
# every rank); vit_hpc saves a checkpoint at the next step boundary and exits
# with status 75; the script then requeues the job (scontrol requeue), which
# starts again under the same job id, hence the same run name and checkpoint
# folder, and resumes where it stopped (checkpoint.resume: auto).
# Resources (nodes, tasks per node, GPUs, time, partition) are sbatch options:
#   sbatch --partition=gpu --time=02:00:00 --nodes=2 jobs/multinode.sbatch

vit_job_die() {
  echo "vit_job: error: $*" >&2
  exit 1
}

# Resolves the folders, checks that the programs are built, and prints
# where the job runs.
vit_job_init() {
  VIT_ROOT=${VIT_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
  VIT_BUILD_DIR=${VIT_BUILD_DIR:-$VIT_ROOT/build}
  VIT_RESULTS_DIR=${VIT_RESULTS_DIR:-$VIT_ROOT/results}
  VIT_LAUNCHER=${VIT_LAUNCHER:-srun}
  VIT_SRUN_MPI=${VIT_SRUN_MPI:-pmix}
  [ -n "${SLURM_JOB_ID:-}" ] || vit_job_die "not inside a Slurm job: submit this script with sbatch"
  [ -x "$VIT_BUILD_DIR/vit_hpc" ] ||
    vit_job_die "$VIT_BUILD_DIR/vit_hpc missing: build first (bash run_tests.sh --build-only) or set VIT_BUILD_DIR"
  [ -x "$VIT_BUILD_DIR/vit_results" ] ||
    vit_job_die "$VIT_BUILD_DIR/vit_results missing: build first (bash run_tests.sh --build-only) or set VIT_BUILD_DIR"
  case "$VIT_LAUNCHER" in
    srun | mpirun) ;;
    *) vit_job_die "VIT_LAUNCHER=$VIT_LAUNCHER (allowed: srun, mpirun)" ;;
  esac
  mkdir -p "$VIT_RESULTS_DIR"
  # One OpenMP thread per CPU Slurm gave each task (CPU kernels, CPU Adam).
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
  echo "vit_job: job ${SLURM_JOB_ID} on ${SLURM_JOB_NODELIST:-?}: ${SLURM_NNODES:-?} node(s)," \
       "${SLURM_NTASKS:-?} task(s), launcher $VIT_LAUNCHER, results in $VIT_RESULTS_DIR"
}

# The spec file named by VIT_CONFIG, or $1 when it is unset.
vit_config() {
  local config=${VIT_CONFIG:-$1}
  case "$config" in
    /*) ;;
    *) config=$VIT_ROOT/$config ;;
  esac
  [ -f "$config" ] || vit_job_die "$config missing (set VIT_CONFIG to an experiment spec)"
  echo "$config"
}

# Runs its arguments as one MPI job over every task of the allocation.
# With srun, each task sees the GPUs of its node and vit_hpc picks one by
# its local rank. The launcher runs in the background so that a signal to
# the batch shell is forwarded at once (bash runs traps only between
# commands); vit_job_stop_signal says which one came, if any.
vit_job_stop_signal=""
vit_job_launch_pid=""
vit_job_on_signal() {  # SIGNAL
  [ -n "$vit_job_stop_signal" ] || vit_job_stop_signal=$1
  echo "vit_job: got SIG$1: asking vit_hpc to save a checkpoint and stop" >&2
  if [ -n "$vit_job_launch_pid" ]; then kill -s USR1 "$vit_job_launch_pid" 2> /dev/null || true; fi
}
vit_launch() {
  echo "vit_job: launching: $*"
  if [ -n "$vit_job_stop_signal" ]; then
    echo "vit_job: SIG$vit_job_stop_signal arrived before the launch: not starting" >&2
    return 75
  fi
  trap 'vit_job_on_signal USR1' USR1
  trap 'vit_job_on_signal TERM' TERM
  trap 'vit_job_on_signal INT' INT
  if [ "$VIT_LAUNCHER" = srun ]; then
    srun --mpi="$VIT_SRUN_MPI" "$@" &
  else
    # shellcheck disable=SC2086  # VIT_MPIRUN_ARGS is a list of options
    mpirun ${VIT_MPIRUN_ARGS:-} "$@" &
  fi
  vit_job_launch_pid=$!
  local rc
  while :; do
    rc=0
    wait "$vit_job_launch_pid" || rc=$?
    # A trapped signal ends `wait` early: wait again while the launcher runs.
    if [ "$rc" -gt 128 ] && kill -0 "$vit_job_launch_pid" 2> /dev/null; then continue; fi
    break
  done
  vit_job_launch_pid=""
  return "$rc"
}

# After a launch that stopped to be resumed (exit status 75, or a stop
# signal): requeue this job so that it resumes by itself. Returns 0 when it
# requeued (Slurm then ends this run of the script), 1 when it did not.
vit_requeue_if_stopped() {  # LAUNCH_STATUS
  [ "$1" -eq 75 ] || [ -n "$vit_job_stop_signal" ] || return 1
  if [ "$1" -ne 75 ]; then
    echo "vit_job: vit_hpc ended with status $1 after SIG$vit_job_stop_signal (not 75: no checkpoint to resume); not requeued" >&2
    return 1
  fi
  echo "vit_job: vit_hpc saved a checkpoint and stopped (status 75): requeueing job $SLURM_JOB_ID" \
       "(restart ${SLURM_RESTART_COUNT:-0} done)"
  if scontrol requeue "$SLURM_JOB_ID"; then
    # Slurm ends this run of the script (SIGTERM, then SIGKILL); do not let
    # a summary race it.
    trap - USR1 TERM INT
    sleep 300 &
    wait $! || true
    return 0
  fi
  echo "vit_job: error: scontrol requeue $SLURM_JOB_ID failed (submit with --requeue); resubmit to resume" >&2
  return 1
}

# vit_summarise SUMMARY.md RUN_DIR...: the markdown tables of the given runs
# (and their plots), printed into the job log too. Jobs of one array write
# the same summary: under a lock, the last one to run sees every finished run.
vit_summarise() {
  local out=$1
  shift
  local stem rc=0 plots=()
  stem=$(basename "$out" .md)
  [ "${VIT_PLOTS:-1}" = 1 ] && plots=(--plots "$VIT_RESULTS_DIR/plots/$stem")
  if command -v flock > /dev/null; then
    (
      flock 9 || exit 1
      "$VIT_BUILD_DIR/vit_results" "${plots[@]}" --output "$out" "$@"
    ) 9> "$VIT_RESULTS_DIR/.$stem.lock" || rc=$?
  else
    "$VIT_BUILD_DIR/vit_results" "${plots[@]}" --output "$out" "$@" || rc=$?
  fi
  if [ "$rc" -ne 0 ]; then
    echo "vit_job: error: vit_results failed (exit status $rc): no summary" >&2
    return "$rc"
  fi
  echo "vit_job: summary written to $out"
  cat "$out"
}

# vit_run_once NAME DEVICE SPEC [vit_hpc arguments...]: one vit_hpc run named
# NAME over the whole allocation, then its summary NAME.md. The run keeps
# checkpoints in VIT_CHECKPOINT_DIR and, when it stops to be resumed, the job
# is requeued instead (vit_requeue_if_stopped). The summary is made even
# when vit_hpc failed (the failed run is listed in it); the return status is
# vit_hpc's when it failed, else vit_results'.
vit_run_once() {
  local name=$1 device=$2 config=$3
  shift 3
  local launch_status=0 summary_status=0 checkpoints=()
  local ckpt_dir=${VIT_CHECKPOINT_DIR:-$VIT_RESULTS_DIR/checkpoints/$name}
  [ "$ckpt_dir" = none ] || checkpoints=(--set checkpoint.dir="$ckpt_dir")
  vit_launch "$VIT_BUILD_DIR/vit_hpc" "$config" --set run.device="$device" \
    --set run.output_dir="$VIT_RESULTS_DIR" --set run.name="$name" "${checkpoints[@]}" "$@" || launch_status=$?
  vit_requeue_if_stopped "$launch_status" && return 0
  vit_summarise "$VIT_RESULTS_DIR/$name.md" "$VIT_RESULTS_DIR/$name" || summary_status=$?
  return $((launch_status != 0 ? launch_status : summary_status))
}

# vit_benchmark_cell DEVICE SPEC [vit_hpc arguments...]: the cell of the
# benchmark grid (plugins x batch sizes, batch size fastest) that this array
# task stands for. Grid knobs:
#   VIT_BENCH_PLUGINS      default: torch_ddp torch_ddp_fp16 low_level_zero gemini hybrid_parallel
#   VIT_BENCH_BATCH_SIZES  default: 8 32 (per data-parallel rank)
#   VIT_BENCH_STEPS, VIT_BENCH_WARMUP_STEPS   measured and warm-up steps (default: the spec's)
#   VIT_BENCH_GROUP        prefix of the run names (default: benchmark_<array job id>)
# A grid of P plugins and S sizes needs --array=0-$((P*S-1)). Every cell
# writes <group>_<plugin>_bs<size>/ and then the group's summary <group>.md
# over the cells finished so far; the cell that finishes last writes the
# full table.
vit_benchmark_cell() {
  local device=$1 config=$2
  shift 2
  local plugins sizes
  read -r -a plugins <<< "${VIT_BENCH_PLUGINS:-torch_ddp torch_ddp_fp16 low_level_zero gemini hybrid_parallel}"
  read -r -a sizes <<< "${VIT_BENCH_BATCH_SIZES:-8 32}"
  local cells=$((${#plugins[@]} * ${#sizes[@]}))
  [ "$cells" -gt 0 ] || vit_job_die "VIT_BENCH_PLUGINS and VIT_BENCH_BATCH_SIZES must each name at least one value"
  [ -n "${SLURM_ARRAY_TASK_ID:-}" ] ||
    vit_job_die "not a job array task: submit with sbatch --array=0-$((cells - 1))"
  local task=$SLURM_ARRAY_TASK_ID
  [ "$task" -lt "$cells" ] || vit_job_die "array task $task is outside the grid of $cells cells" \
    "(${#plugins[@]} plugins x ${#sizes[@]} batch sizes): submit with --array=0-$((cells - 1))"
  local last_task=${SLURM_ARRAY_TASK_MAX:-$task}
  if [ "$last_task" -lt $((cells - 1)) ]; then
    echo "vit_job: warning: the array ends at task $last_task but the grid has $cells cells" \
         "(--array=0-$((cells - 1)) covers all)" >&2
  fi
  local plugin=${plugins[task / ${#sizes[@]}]} batch=${sizes[task % ${#sizes[@]}]}
  local group=${VIT_BENCH_GROUP:-benchmark_${SLURM_ARRAY_JOB_ID}}
  local name=${group}_${plugin}_bs${batch}
  echo "vit_job: benchmark cell $task of $cells: plugin $plugin, batch size $batch per data-parallel rank"

  local steps=()
  [ -n "${VIT_BENCH_STEPS:-}" ] && steps+=(--set benchmark.steps="$VIT_BENCH_STEPS")
  [ -n "${VIT_BENCH_WARMUP_STEPS:-}" ] && steps+=(--set benchmark.warmup_steps="$VIT_BENCH_WARMUP_STEPS")
  local launch_status=0 summary_status=0
  vit_launch "$VIT_BUILD_DIR/vit_hpc" "$config" --set run.device="$device" \
    --set run.output_dir="$VIT_RESULTS_DIR" --set run.name="$name" \
    --set plugin.name="$plugin" --set train.batch_size="$batch" \
    --set benchmark.enabled=true "${steps[@]}" "$@" || launch_status=$?

  # Only cells whose manifest exists: a cell just starting may have rank
  # files before rank 0 has written its manifest.
  local runs=() dir
  for dir in "$VIT_RESULTS_DIR/$group"_*/; do
    [ -f "$dir/manifest.json" ] && runs+=("${dir%/}")
  done
  if [ ${#runs[@]} -gt 0 ]; then
    vit_summarise "$VIT_RESULTS_DIR/$group.md" "${runs[@]}" || summary_status=$?
  else
    echo "vit_job: error: no run folder of group $group in $VIT_RESULTS_DIR" >&2
    summary_status=1
  fi
  return $((launch_status != 0 ? launch_status : summary_status))
}
