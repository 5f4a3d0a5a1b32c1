#!/usr/bin/env bash
# The CPU batch scripts of jobs/cpu/ on a real Slurm: a private one-node
# cluster on localhost (Debian's slurm-wlm and munge, which run_tests.sh
# installs), started here and stopped on exit, whatever happens.
#
#   test_slurm_jobs.sh SOURCE_DIR BUILD_DIR
#
# 1. munged with a fresh key, slurmctld and slurmd with a slurm.conf in a
#    temporary folder (free ports, state and spool there too, the node's real
#    CPUs and memory from `slurmd -C`);
# 2. sbatch --wait of jobs/cpu/demo.sbatch and of jobs/cpu/benchmark.sbatch
#    as a job array of 2 plugins x 2 batch sizes, both through
#    srun --mpi=pmix, results under the temporary folder;
# 3. checks of their run folders (manifest completed, one rank file per rank)
#    and of the tables vit_results wrote from them, then vit_results over all
#    of them again;
# 4. preemption (issue 11): jobs/cpu/demo.sbatch with a one-minute time limit
#    and --signal=B:USR1@58 trains longer than Slurm lets it run before the
#    signal; the script forwards the signal, vit_hpc saves a checkpoint and
#    exits 75, the script requeues the job, which resumes by itself, until it
#    finishes: its final weights must equal those of the same training run
#    uninterrupted outside Slurm, bit for bit, every step recorded once.
#    Slurm sends the warning signal (due 2 s after the start) at its next
#    30-second time-limit check, so the training is sized (from a short
#    calibration run) to last about 40 s uninterrupted; a requeued job waits
#    cred_expire (10 s here, 120 by default) before it may start again.
# Needs build/vit_hpc, build/vit_results and configs/quickstart.yaml (and
# whatever data that spec reads). Takes about 30 s plus the jobs' own time,
# and about two minutes for the preemption (4).
#
# Environment: VIT_SLURM_TEST_TIMEOUT (seconds to wait for the jobs, default
# 360), VIT_SLURM_TEST_KEEP=1 keeps the temporary folder for inspection.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 SOURCE_DIR BUILD_DIR" >&2
  exit 2
fi
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
job_timeout=${VIT_SLURM_TEST_TIMEOUT:-360}
bench_plugins=(torch_ddp)  # the plugins this build offers on CPU
bench_sizes=(4 8)
ranks=2  # --ntasks-per-node of jobs/cpu/*.sbatch

log() { echo "test_slurm_jobs: $*"; }
fail() {
  echo "test_slurm_jobs: FAIL: $*" >&2
  exit 1
}

# --- what the test needs -------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIPPED: slurmd must run as root to start jobs; run this test as root (CI and run_tests.sh do)"
  exit 77
fi
for tool in munged slurmctld slurmd sbatch squeue sinfo scancel scontrol; do
  command -v "$tool" > /dev/null ||
    fail "$tool not found: Slurm and munge are missing (run_tests.sh installs them: apt-get install slurm-wlm munge)"
done
[ -x "$build/vit_hpc" ] || fail "$build/vit_hpc missing: the trainer is not built yet (cmake --build $build)"
[ -x "$build/vit_results" ] || fail "$build/vit_results missing (cmake --build $build --target vit_results)"
[ -f "$src/configs/quickstart.yaml" ] || fail "$src/configs/quickstart.yaml missing: the CPU jobs run it"

# Short path: the munge socket path must fit a sockaddr_un (108 bytes).
tmp=$(mktemp -d /tmp/vit_slurm.XXXXXX)
mkdir -p "$tmp/munge" "$tmp/state" "$tmp/spool" "$tmp/log" "$tmp/jobs" "$tmp/results"
export SLURM_CONF=$tmp/slurm.conf
munged_pid="" slurmctld_pid="" slurmd_pid=""

stop_daemon() {  # name pid
  [ -n "$2" ] || return 0
  kill "$2" 2> /dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$2" 2> /dev/null || return 0
    sleep 0.2
  done
  log "$1 (pid $2) did not stop on SIGTERM: SIGKILL"
  kill -9 "$2" 2> /dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  if [ -n "$slurmctld_pid" ] && kill -0 "$slurmctld_pid" 2> /dev/null; then
    # Cancel whatever still runs, and give its steps time to end.
    local jobs
    jobs=$(squeue -h -o %A 2> /dev/null | sort -u)
    if [ -n "$jobs" ]; then
      log "cancelling jobs still queued or running: $(echo $jobs)"
      scancel $jobs 2> /dev/null
      for _ in $(seq 30); do
        [ -z "$(squeue -h 2> /dev/null)" ] && break
        sleep 1
      done
    fi
  fi
  stop_daemon slurmd "$slurmd_pid"
  stop_daemon slurmctld "$slurmctld_pid"
  stop_daemon munged "$munged_pid"
  if [ "$rc" -ne 0 ]; then
    for f in "$tmp"/jobs/*.out; do
      [ -f "$f" ] && { echo "----- job log $(basename "$f")"; tail -n 40 "$f"; }
    done
    for f in "$tmp"/log/*.log; do
      [ -f "$f" ] && { echo "----- $(basename "$f") (last lines)"; tail -n 15 "$f"; }
    done
  fi
  if [ "${VIT_SLURM_TEST_KEEP:-0}" = 1 ]; then
    log "kept $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- munge ----------------------------------------------------------------------
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$tmp/munge/munge.key"
# --force: the folder is under /tmp, which munged finds too open otherwise.
munged --foreground --force --key-file="$tmp/munge/munge.key" --socket="$tmp/munge/socket" \
  --pid-file="$tmp/munge/munged.pid" --seed-file="$tmp/munge/seed" --log-file="$tmp/log/munged.log" \
  > "$tmp/log/munged.out" 2>&1 &
munged_pid=$!
for _ in $(seq 50); do
  [ -S "$tmp/munge/socket" ] && break
  kill -0 "$munged_pid" 2> /dev/null || fail "munged exited: $(cat "$tmp/log/munged.out")"
  sleep 0.1
done
[ -S "$tmp/munge/socket" ] || fail "munged made no socket in 5 s"

# --- slurm.conf -----------------------------------------------------------------
port_in_use() { ss -Htan "( sport = :$1 )" 2> /dev/null | grep -q .; }
ctld_port=$((20000 + ($$ % 20000)))
while port_in_use "$ctld_port" || port_in_use $((ctld_port + 1)); do ctld_port=$((ctld_port + 2)); done
host=$(hostname -s)
node_line=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=... RealMemory=...
case "$node_line" in
  NodeName=*) ;;
  *) fail "slurmd -C printed no node line: $node_line" ;;
esac
cat > "$SLURM_CONF" << EOF
# A one-node cluster for tests/slurm: everything under $tmp.
ClusterName=vittest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$((ctld_port + 1))
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/socket,cred_expire=10
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# --- daemons --------------------------------------------------------------------
slurmctld -D -c -f "$SLURM_CONF" > "$tmp/log/slurmctld.out" 2>&1 &
slurmctld_pid=$!
for _ in $(seq 50); do
  scontrol ping 2> /dev/null | grep -q UP && break
  kill -0 "$slurmctld_pid" 2> /dev/null || fail "slurmctld exited: $(tail -n 5 "$tmp/log/slurmctld.out")"
  sleep 0.2
done
scontrol ping | grep -q UP || fail "slurmctld does not answer: $(scontrol ping 2>&1)"
slurmd -D -c -f "$SLURM_CONF" > "$tmp/log/slurmd.out" 2>&1 &
slurmd_pid=$!
node_name=${node_line#NodeName=}
node_name=${node_name%% *}
state=""
for _ in $(seq 60); do
  state=$(sinfo -h -n "$node_name" -o %T 2> /dev/null || true)
  [ "$state" = idle ] && break
  kill -0 "$slurmd_pid" 2> /dev/null || fail "slurmd exited: $(tail -n 5 "$tmp/log/slurmd.out")"
  sleep 0.5
done
[ "$state" = idle ] || fail "node $node_name is '$state', not idle, after 30 s: $(sinfo -R 2>&1)"
log "one-node Slurm up: node $node_name ($(sinfo -h -o '%c CPUs, %m MB')), port $ctld_port"
srun --mpi=list 2>&1 | grep -qw pmix || fail "this Slurm has no pmix MPI plugin: $(srun --mpi=list 2>&1)"

# --- the jobs -------------------------------------------------------------------
# Submitted from the repository root, as users do; results and logs go to
# the temporary folder instead of results/.
export VIT_BUILD_DIR=$build VIT_RESULTS_DIR=$tmp/results
export VIT_BENCH_PLUGINS="${bench_plugins[*]}" VIT_BENCH_BATCH_SIZES="${bench_sizes[*]}"
cells=$((${#bench_plugins[@]} * ${#bench_sizes[@]}))
cd "$src"
start=$SECONDS
demo_rc=0 bench_rc=0
# The demo reads the Beans file the ctest fixture prepared, for 2 epochs.
data=$build/test_data/beans_64.h5
[ -f "$data" ] || fail "$data missing: the prepare_beans_64 test makes it (run the whole ctest suite)"
timeout "$job_timeout" sbatch --wait --parsable --output="$tmp/jobs/%x-%j.out" \
  jobs/cpu/demo.sbatch --set data.path="$data" --set train.epochs=2 > "$tmp/demo.id" &
demo_wait=$!
timeout "$job_timeout" sbatch --wait --parsable --array=0-$((cells - 1)) --output="$tmp/jobs/%x-%A_%a.out" \
  jobs/cpu/benchmark.sbatch > "$tmp/bench.id" &
bench_wait=$!
wait "$demo_wait" || demo_rc=$?
wait "$bench_wait" || bench_rc=$?
log "jobs ended after $((SECONDS - start)) s (sbatch --wait: demo $demo_rc, benchmark $bench_rc)"
[ "$demo_rc" -ne 124 ] && [ "$bench_rc" -ne 124 ] || fail "the jobs did not end within $job_timeout s"
[ "$demo_rc" -eq 0 ] || fail "jobs/cpu/demo.sbatch failed (exit status $demo_rc)"
[ "$bench_rc" -eq 0 ] || fail "jobs/cpu/benchmark.sbatch failed (highest exit status of its tasks: $bench_rc)"
demo_id=$(cut -d';' -f1 < "$tmp/demo.id")
bench_id=$(cut -d';' -f1 < "$tmp/bench.id")

# --- checks ---------------------------------------------------------------------
# A run folder as docs/metrics.md says: manifest completed, one rank file per rank.
check_run_folder() {  # dir mode
  local dir=$1 mode=$2 r
  [ -f "$dir/manifest.json" ] || fail "$dir/manifest.json missing"
  grep -Eq '"status": *"completed"' "$dir/manifest.json" || fail "$dir/manifest.json: status is not \"completed\""
  grep -Eq "\"mode\": *\"$mode\"" "$dir/manifest.json" || fail "$dir/manifest.json: mode is not \"$mode\""
  grep -Eq "\"size\": *$ranks[,}[:space:]]" "$dir/manifest.json" || fail "$dir/manifest.json: world size is not $ranks"
  for ((r = 0; r < ranks; r++)); do
    [ -s "$dir/rank_$r.jsonl" ] || fail "$dir/rank_$r.jsonl missing or empty"
  done
  [ ! -e "$dir/rank_$ranks.jsonl" ] || fail "$dir/rank_$ranks.jsonl: more rank files than ranks"
}

# Every table row has as many cells as its header row.
check_tables_are_rectangular() {  # file
  awk -v file="$1" '
    /^\|/ { line = $0; gsub(/\\\|/, "", line); n = gsub(/\|/, "|", line); if (!in_table) { width = n; in_table = 1 } else if (n != width) {
              printf "%s:%d: %d cells where the header has %d\n", file, NR, n - 1, width - 1; bad = 1 } next }
    { in_table = 0 }
    END { exit bad }' "$1" || fail "$1: a table row does not match its header"
}

# The cells of one row (by its label) of the table that follows heading $2.
row_cells() {  # file heading label
  awk -v heading="$2" -v label="$3" '
    $0 == heading { found = 1; next }
    found && /^#/ { exit }
    found && index($0, "| " label " |") == 1 { print; exit }' "$1"
}

demo_dir=$tmp/results/cpu_demo_$demo_id
check_run_folder "$demo_dir" train
demo_md=$tmp/results/cpu_demo_$demo_id.md
[ -s "$demo_md" ] || fail "$demo_md missing: the demo job wrote no summary"
check_tables_are_rectangular "$demo_md"
grep -q "^### cpu_demo_$demo_id\$" "$demo_md" || fail "$demo_md: no section for run cpu_demo_$demo_id"
grep -q "^- layout: $ranks ranks = 1 node x $ranks, " "$demo_md" || fail "$demo_md: layout is not $ranks ranks on 1 node"
grep -Eq '^\| \| epoch 1 \|' "$demo_md" || fail "$demo_md: no table with a column per epoch"
for row in "it/s" "average training loss" "validation accuracy"; do
  grep -Eq "^\\| $row( \\| [0-9]+\\.[0-9]+)+ \\|\$" "$demo_md" || fail "$demo_md: no row '$row' of numbers"
done
grep -q '^Final test accuracy: ' "$demo_md" || fail "$demo_md: no final test accuracy line"

group=benchmark_$bench_id
bench_md=$tmp/results/$group.md
[ -s "$bench_md" ] || fail "$bench_md missing: the benchmark jobs wrote no summary"
check_tables_are_rectangular "$bench_md"
header="| |"
for p in "${bench_plugins[@]}"; do header+=" $p |"; done
for bs in "${bench_sizes[@]}"; do
  for p in "${bench_plugins[@]}"; do check_run_folder "$tmp/results/${group}_${p}_bs$bs" benchmark; done
  heading="### Batch size $bs per data-parallel rank, $ranks ranks (1 node x $ranks), cpu"
  grep -qxF "$heading" "$bench_md" || fail "$bench_md: no table '$heading'"
  table_header=$(awk -v h="$heading" '$0 == h { getline; getline; print; exit }' "$bench_md")
  [ "$table_header" = "$header" ] || fail "$bench_md: table header '$table_header', expected '$header'"
  for label in "throughput (images/s)" "it/s"; do
    row_cells "$bench_md" "$heading" "$label" | grep -Eq "^\\| [^|]+( \\| [0-9]+\\.[0-9]+){${#bench_plugins[@]}} \\|\$" ||
      fail "$bench_md: row '$label' under '$heading' is not one number per plugin"
  done
  row_cells "$bench_md" "$heading" "max memory usage per rank (peak RSS)" |
    grep -Eq "^\\| [^|]+( \\| [0-9.]+ (B|KiB|MiB|GiB)){${#bench_plugins[@]}} \\|\$" ||
    fail "$bench_md: row 'max memory usage per rank (peak RSS)' under '$heading' is not one size per plugin"
  row_cells "$bench_md" "$heading" "runs" | grep -Eq "^\\| runs( \\| 1){${#bench_plugins[@]}} \\|\$" ||
    fail "$bench_md: each column should hold exactly one run"
done

# vit_results over the whole results folder: the same benchmark tables as
# the summary the last array task wrote, plus the demo.
all_md=$tmp/all.md
"$build/vit_results" "$tmp/results" > "$all_md" 2> "$tmp/all.err" ||
  fail "vit_results $tmp/results failed: $(cat "$tmp/all.err")"
tables_of() { sed -n '/^### Batch size/,/^## /p' "$1" | grep -v -e '^## ' -e '^$'; }
diff <(tables_of "$bench_md") <(tables_of "$all_md") > "$tmp/tables.diff" ||
  fail "benchmark tables differ between $group.md and vit_results over all runs: $(cat "$tmp/tables.diff")"
grep -q "^### cpu_demo_$demo_id\$" "$all_md" || fail "vit_results over all runs lost the demo"
if command -v gnuplot > /dev/null; then
  for f in "cpu_demo_$demo_id/cpu_demo_${demo_id}_loss.svg" "$group/throughput_bs${bench_sizes[0]}.svg"; do
    [ -s "$tmp/results/plots/$f" ] || fail "plot $tmp/results/plots/$f missing (gnuplot is installed)"
  done
fi
log "demo job $demo_id and benchmark array $bench_id ($cells cells) ran through Slurm; tables checked"

# --- 4. preemption: time limit, --signal, requeue, resume ------------------------
# The tests' base spec (the quickstart model without the recipe options),
# not configs/quickstart.yaml, whose tuning would change the step time.
pre_spec=$src/tests/train/e2e_base.yaml
pre_args=(--set data.path="$data" --set model.depth=2 --set train.batch_size=8 --set run.cpu_threads=1
  --set eval.enabled=false --set eval.test_at_end=false --set run.progress=false)
mpirun_cmd=(mpirun --oversubscribe --bind-to none -np "$ranks")
[ "$(id -u)" -eq 0 ] && mpirun_cmd+=(--allow-run-as-root)
# How long a step takes here: the median of a short run's step times.
"${mpirun_cmd[@]}" "$build/vit_hpc" "$pre_spec" "${pre_args[@]}" --set train.steps=7 \
  --set run.output_dir="$tmp/outside" --set run.name=calibrate > "$tmp/calibrate.log" 2>&1 ||
  fail "the calibration run failed: $(tail -n 5 "$tmp/calibrate.log")"
step_time=$(grep -o '"step_time":[0-9.e+-]*' "$tmp/outside/calibrate/rank_0.jsonl" | cut -d: -f2 | sort -g |
  awk '{ t[NR] = $1 } END { print t[int((NR + 1) / 2)] }')
steps=$(awk -v t="$step_time" 'BEGIN { n = int(40 / t) + 1; if (n < 60) n = 60; if (n > 20000) n = 20000; print n }')
log "preemption: $steps steps of about $step_time s (40 s uninterrupted)"
"${mpirun_cmd[@]}" "$build/vit_hpc" "$pre_spec" "${pre_args[@]}" --set train.steps="$steps" \
  --set run.output_dir="$tmp/outside" --set run.name=uninterrupted \
  --set checkpoint.export_hf="$tmp/outside/uninterrupted_export" > "$tmp/uninterrupted.log" 2>&1 ||
  fail "the uninterrupted run failed: $(tail -n 5 "$tmp/uninterrupted.log")"
start=$SECONDS
pre_rc=0
VIT_CONFIG=$pre_spec VIT_RUN_NAME=preempted timeout 300 sbatch --wait --parsable --time=1 --signal=B:USR1@58 \
  --output="$tmp/jobs/%x-%j.out" jobs/cpu/demo.sbatch "${pre_args[@]}" --set train.steps="$steps" \
  --set checkpoint.export_hf="$tmp/results/preempted_export" > "$tmp/preempt.id" || pre_rc=$?
pre_id=$(cut -d';' -f1 < "$tmp/preempt.id")
[ "$pre_rc" -ne 124 ] || fail "the preempted job did not finish within 300 s"
[ "$pre_rc" -eq 0 ] || fail "the preempted job failed (sbatch --wait: $pre_rc)"
restarts=$(scontrol show job "$pre_id" 2> /dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
pre_log=$tmp/jobs/vit-cpu-demo-$pre_id.out
log "preempted job $pre_id finished after $((SECONDS - start)) s, requeued ${restarts:-?} times"
grep -q 'vit_job: got SIGUSR1' "$pre_log" || fail "$pre_log: the job never got its --signal (trained too briefly?)"
grep -q "requeueing job $pre_id" "$pre_log" || fail "$pre_log: the job did not requeue itself"
[ "${restarts:-0}" -ge 1 ] || fail "scontrol says job $pre_id was requeued ${restarts:-0} times"
pre_dir=$tmp/results/preempted
check_run_folder "$pre_dir" train
resumes=$(grep -c '"from_step"' "$pre_dir/manifest.json" || true)
[ "$resumes" -ge 1 ] || fail "$pre_dir/manifest.json lists no resume"
recorded=$(grep -o '"type":"step"' "$pre_dir/rank_0.jsonl" | wc -l)
distinct=$(grep '"type":"step"' "$pre_dir/rank_0.jsonl" | grep -o '"step":[0-9]*' | sort -u | wc -l)
[ "$recorded" -eq "$steps" ] && [ "$distinct" -eq "$steps" ] ||
  fail "$pre_dir/rank_0.jsonl: $recorded step lines, $distinct distinct, for $steps steps"
cmp -s "$tmp/results/preempted_export/model.safetensors" "$tmp/outside/uninterrupted_export/model.safetensors" ||
  fail "the preempted job's final weights differ from the uninterrupted run's"
log "PASS: demo job $demo_id and benchmark array $bench_id ($cells cells) ran through Slurm; tables checked;" \
  "job $pre_id was preempted $resumes time(s), requeued itself and ended with the uninterrupted run's weights"
