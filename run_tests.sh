#!/usr/bin/env bash
# Installs what is missing, configures, builds and runs every test through ctest.
#
#   bash run_tests.sh                 everything
#   bash run_tests.sh --build-only    install + configure + build (used by run_demo.sh)
#   bash run_tests.sh -R sampler      pass the rest to ctest (here: only tests matching "sampler")
#
# Environment: BUILD_DIR (default build), VIT_WITH_CUDA (AUTO|ON|OFF, default AUTO),
# CTEST_PARALLEL (default: number of cores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

BUILD_DIR=${BUILD_DIR:-build}
build_only=0
ctest_args=()
for arg in "$@"; do
  case "$arg" in
    --build-only) build_only=1 ;;
    *) ctest_args+=("$arg") ;;
  esac
done

# --- Debian packages: install only what is missing, quietly ------------------
packages=(
  cmake ninja-build g++ pkg-config ccache
  libopenmpi-dev openmpi-bin libhdf5-dev libyaml-cpp-dev nlohmann-json3-dev
  libboost-program-options-dev libboost-test-dev
  libturbojpeg0-dev libjpeg62-turbo-dev libstb-dev libzip-dev libopenblas-dev
  gnuplot-nox slurm-wlm munge
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run_tests.sh: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Configure and build ------------------------------------------------------
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVIT_WITH_CUDA="${VIT_WITH_CUDA:-AUTO}" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
[ "$build_only" -eq 1 ] && exit 0

# --- Test ---------------------------------------------------------------------
# Open MPI refuses to start as root without these (CI runs as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Tests that need a GPU report "Skipped" in the summary below where there is none.
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${CTEST_PARALLEL:-$(nproc)}" "${ctest_args[@]}"
