#!/usr/bin/env bash
# The demo: install what is missing, build, prepare the Beans data, train.
#
#   With a GPU:    ViT-B/16 at 224 px (configs/demo.yaml) on every GPU of this machine.
#   Without one:   a small ViT at 64 px (configs/quickstart.yaml) on 2 CPU ranks
#                  (about 2.5 minutes of training on 2 cores).
# Then the run's table (build/vit_results). Extra arguments go to vit_hpc,
# e.g.  bash run_demo.sh --set train.epochs=5
#
# Environment: BEANS_DIR (default ../shared/datasets/beans), BUILD_DIR (build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
BEANS_DIR=${BEANS_DIR:-../shared/datasets/beans}
BUILD_DIR=${BUILD_DIR:-build}

bash run_tests.sh --build-only
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

gpus=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L | wc -l)
fi
if [ "$gpus" -gt 0 ]; then
  config=configs/demo.yaml size=224 np=$gpus
else
  config=configs/quickstart.yaml size=64 np=2
fi

data=data/beans_${size}.h5
if [ ! -f "$data" ]; then
  [ -d "$BEANS_DIR" ] || { echo "run_demo.sh: Beans images not found in $BEANS_DIR (set BEANS_DIR)" >&2; exit 1; }
  mkdir -p data
  "$BUILD_DIR/vit_data_prep" --input "$BEANS_DIR" --output "$data" --image-size "$size"
fi

name="$(basename "$config" .yaml)_$(date +%Y%m%d_%H%M%S)"
echo "run_demo.sh: mpirun -np $np $BUILD_DIR/vit_hpc $config --set run.name=$name $*"
mpirun --bind-to none -np "$np" "$BUILD_DIR/vit_hpc" "$config" --set run.name="$name" --set data.path="$data" "$@"
echo
"$BUILD_DIR/vit_results" "results/$name"
