#!/usr/bin/env bash
# Recipe comparison on one GPU machine: every line of VARIANTS is a run of
# configs/demo.yaml with its own overrides, and the runs go side by side on
# the GPU (time-sliced, so each run's wall time is an upper bound of its time
# alone). From the repository root:
#
#   bash tests/gpu/recipe_sweep.sh BIN_DIR DATA_DIR VARIANTS [CONFIG]
#
# VARIANTS: lines "name  --set a=b --set c=d ..." ('#' starts a comment). The
# run reads DATA_DIR/beans_224.h5, writes results/<name> and $OUT/<name>.txt
# (or ./gpu_logs), and prints one line per run: wall time, validation
# accuracy of the best epoch, test accuracy of the last (or averaged) weights
# and of the best-validation weights. Pick a recipe by validation accuracy,
# not test accuracy.
set -uo pipefail
BIN=$(realpath "$1")
DATA=$(realpath "$2")
VARIANTS=$3
CONFIG=${4:-configs/demo.yaml}
LOG=${OUT:-$PWD/gpu_logs}
mkdir -p "$LOG"
N=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
export LD_LIBRARY_PATH=$N/cudnn/lib:$N/nccl/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

names=()
while read -r name sets; do
  case "$name" in ''|'#'*) continue ;; esac
  names+=("$name")
  (
    start=$SECONDS
    # shellcheck disable=SC2086
    mpirun --bind-to none -np 1 "$BIN/vit_hpc" "$CONFIG" --set data.path="$DATA/beans_224.h5" \
      --set run.name="$name" --set run.output_dir=results --set run.progress=false $sets > "$LOG/$name.txt" 2>&1
    echo "rc=$? wall=$((SECONDS - start))" >> "$LOG/$name.txt"
  ) &
done < "$VARIANTS"
wait

printf "%-14s %4s %6s %8s %8s %8s  %s\n" run rc wall_s best_val test_last test_best overrides
for name in "${names[@]}"; do
  f="$LOG/$name.txt"
  rc=$(grep -o 'rc=[0-9]*' "$f" | tail -1 | cut -d= -f2)
  wall=$(grep -o 'wall=[0-9]*' "$f" | tail -1 | cut -d= -f2)
  last=$(grep -E '^test: .*(last epoch|weight average)' "$f" | grep -o 'accuracy [0-9.]*' | head -1 | cut -d' ' -f2)
  best=$(grep -E '^test: .*best validation epoch' "$f" | grep -o 'accuracy [0-9.]*' | head -1 | cut -d' ' -f2)
  bval=$(grep -E '^test: .*best validation epoch' "$f" | grep -o 'accuracy [0-9.]*' | tail -1 | cut -d' ' -f2)
  printf "%-14s %4s %6s %8s %8s %8s  %s\n" "$name" "${rc:-?}" "${wall:-?}" "${bval:--}" "${last:--}" "${best:--}" \
    "$(grep -E "^$name[[:space:]]" "$VARIANTS" | head -1 | cut -d' ' -f2- | sed 's/--set //g')"
  cp -r "results/$name" "$LOG/" 2>/dev/null
done
