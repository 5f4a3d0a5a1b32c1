#!/usr/bin/env bash
# Times vit_data_prep on the full Beans dataset at 224 px, raw and jpeg
# storage, and prints the file sizes (the numbers in the data branch report).
#
#   bash data_prep/measure_prep.sh [build_dir] [runs]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD=${1:-build}
RUNS=${2:-3}
BEANS=${VIT_BEANS_DIR:-../shared/datasets/beans}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/vit_prep_measure.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for storage in raw jpeg; do
  for run in $(seq "$RUNS"); do
    TIMEFORMAT="$storage run $run: %R s wall, %U s user, %S s sys (CPU time: less disturbed by other load)"
    { time "$BUILD/vit_data_prep" --input "$BEANS" --output "$OUT/beans_224_$storage.h5" --image-size 224 \
      --storage "$storage" --overwrite --quiet; } 2>&1
  done
  printf '%-5s size: %d bytes\n' "$storage" "$(stat -c %s "$OUT/beans_224_$storage.h5")"
done
