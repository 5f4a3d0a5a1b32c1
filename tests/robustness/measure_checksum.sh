#!/usr/bin/env bash
# What data.verify_checksum costs: `vit_hpc --check` (which runs every check a
# run makes before training, the checksum included) on the 224 px Beans file,
# raw and jpeg storage, with the checksum on and off; the difference is the
# verification. The page cache is warm (the file was just written), as it is
# for the second and later runs on a node. Prints each time and the median.
#
#   bash tests/robustness/measure_checksum.sh [build_dir] [runs] [ranks]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BUILD=${1:-build}
RUNS=${2:-5}
RANKS=${3:-1}
BEANS=${VIT_BEANS_DIR:-../shared/datasets/beans}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/vit_checksum_measure.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $RANKS rank(s)"
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
for storage in raw jpeg; do
  file="$OUT/beans_224_$storage.h5"
  "$BUILD/vit_data_prep" --input "$BEANS" --output "$file" --image-size 224 --storage "$storage" --quiet
  for verify in false true; do
    times=()
    for _ in $(seq "$RUNS"); do
      start=$(date +%s.%N)
      mpirun --oversubscribe --bind-to none -np "$RANKS" "$BUILD/vit_hpc" --check --set data.path="$file" \
        --set run.device=cpu --set run.output_dir="$OUT/results" --set data.verify_checksum="$verify" > /dev/null
      times+=("$(echo "$(date +%s.%N) - $start" | bc)")
    done
    printf '%-4s %9d bytes  verify_checksum=%-5s  median %.3f s  (%s)\n' "$storage" "$(stat -c %s "$file")" \
      "$verify" "$(printf '%s\n' "${times[@]}" | median)" "${times[*]}"
  done
done
