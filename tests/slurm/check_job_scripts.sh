#!/usr/bin/env bash
# Static checks of the Slurm batch scripts in jobs/ (no Slurm needed):
#   - every script and the shared library parse (bash -n);
#   - the demo, benchmark and multinode scripts exist for GPUs and for CPUs;
#   - every #SBATCH directive comes before the first command (sbatch stops
#     reading directives there, silently);
#   - each script names the usual knobs as directives: job name, nodes,
#     tasks per node, time, and an output log under results/;
#   - GPU scripts request GPUs the standard way (--gpus-per-node or
#     --gres=gpu:N), CPU scripts request none; benchmark scripts are arrays;
#   - each script launches through the shared library (srun --mpi / mpirun,
#     then vit_results); training scripts ask for a signal before the time
#     limit (--signal=B:USR1@N) and may be requeued (--requeue).
#
#   check_job_scripts.sh JOBS_DIR
set -uo pipefail
jobs=${1:?usage: check_job_scripts.sh JOBS_DIR}
errors=0
bad() {
  echo "check_job_scripts: $*" >&2
  errors=$((errors + 1))
}

for f in "$jobs"/lib/vit_job.sh "$jobs"/{,cpu/}{demo,benchmark,multinode}.sbatch; do
  [ -f "$f" ] || bad "$f missing"
done
grep -q 'srun --mpi=' "$jobs/lib/vit_job.sh" || bad "lib/vit_job.sh: no srun --mpi= launch"
grep -q 'mpirun' "$jobs/lib/vit_job.sh" || bad "lib/vit_job.sh: no mpirun launch"
grep -q 'vit_results' "$jobs/lib/vit_job.sh" || bad "lib/vit_job.sh: does not run vit_results"

checked=0
for f in "$jobs"/*.sbatch "$jobs"/cpu/*.sbatch "$jobs"/lib/*.sh; do
  [ -f "$f" ] || continue
  checked=$((checked + 1))
  bash -n "$f" || bad "$f: bash -n failed"
  case "$f" in *.sh) continue ;; esac

  [ "$(head -n 1 "$f")" = "#!/bin/bash" ] || bad "$f: first line must be #!/bin/bash"
  # Directives after the first command are ignored by sbatch.
  awk -v file="$f" '
    NR > 1 && !/^[[:space:]]*(#|$)/ { command = 1 }
    command && /^#SBATCH/ { printf "check_job_scripts: %s:%d: #SBATCH after the first command is ignored by sbatch\n", file, NR; bad = 1 }
    END { exit bad }' "$f" >&2 || errors=$((errors + 1))
  for option in --job-name= --nodes= --ntasks-per-node= --time= --output=results/; do
    grep -q "^#SBATCH $option" "$f" || bad "$f: no '#SBATCH $option' directive"
  done
  gpus=$(grep -cE '^#SBATCH (--gpus-per-node=[1-9]|--gres=gpu:[1-9])' "$f")
  case "$f" in
    */cpu/*) [ "$gpus" -eq 0 ] || bad "$f: a CPU script requests GPUs" ;;
    *) [ "$gpus" -eq 1 ] || bad "$f: requests no GPUs (#SBATCH --gpus-per-node=N or --gres=gpu:N)" ;;
  esac
  grep -q 'source "${VIT_ROOT:-${SLURM_SUBMIT_DIR:-.}}/jobs/lib/vit_job.sh"' "$f" || bad "$f: does not source jobs/lib/vit_job.sh"
  grep -q '^vit_job_init$' "$f" || bad "$f: does not call vit_job_init"
  case "$f" in
    */benchmark.sbatch)
      grep -qE '^#SBATCH --array=0-[0-9]+' "$f" || bad "$f: not a job array (#SBATCH --array=0-N)"
      grep -q '^vit_benchmark_cell ' "$f" || bad "$f: does not run vit_benchmark_cell"
      ;;
    *)
      grep -q '^vit_run_once ' "$f" || bad "$f: does not run vit_run_once"
      # Training jobs stop to be resumed before a time limit, and requeue.
      grep -qE '^#SBATCH --signal=B:USR1@[0-9]+$' "$f" || bad "$f: no '#SBATCH --signal=B:USR1@SECONDS' (save before the time limit)"
      grep -q '^#SBATCH --requeue$' "$f" || bad "$f: no '#SBATCH --requeue' (a stopped job resumes by itself)"
      ;;
  esac
done
[ "$checked" -ge 7 ] || bad "only $checked scripts found under $jobs"
if [ "$errors" -ne 0 ]; then
  echo "check_job_scripts: $errors problem(s)" >&2
  exit 1
fi
echo "check_job_scripts: $checked scripts checked"
