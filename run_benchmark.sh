#!/usr/bin/env bash
# The benchmark grid: every plugin this build offers x batch sizes (8 and 32
# per data-parallel rank, as the original example), one run folder each under
# results/<grid>/, then the aggregated markdown tables (results/<grid>/summary.md).
#
#   bash run_benchmark.sh                          GPU: ViT-B/16 (configs/benchmark.yaml) on every GPU
#                                                  no GPU: the small CPU model on 2 ranks
#   bash run_benchmark.sh --batch-sizes "8 32 64 256" --np 1 --steps 50
#   bash run_benchmark.sh --plugins torch_ddp_fp16 --precision fp16
#   bash run_benchmark.sh --plugins "torch_ddp_fp16 low_level_zero:1 low_level_zero:2"
#   bash run_benchmark.sh --plugins "torch_ddp_fp16 gemini:0 gemini:1"
#   bash run_benchmark.sh --np 4 --plugins "hybrid_parallel:tp2pp2 hybrid_parallel:tp1pp2mb4zero1"
#   bash run_benchmark.sh --np 1 --plugins "torch_ddp_fp16 torch_ddp_fp16+recompute_gelu"
#
# Options: --batch-sizes "A B ..."  --plugins "P Q ..." (low_level_zero:S picks ZeRO stage S;
#          gemini:F offloads the optimizer states of a fraction F of the chunks to the CPU;
#          hybrid_parallel:tpTppP[mbM][zero1] the layout: T x P ranks per replica, M pipeline
#          micro-batches (default P), ZeRO-1 over the data-parallel group; any entry may end in
#          +recompute_gelu, +recompute_norm, +recompute (train.recompute_gelu / recompute_norm /
#          recompute on), +attention_atomics
#          (cuDNN's attention backward, model.attention_deterministic off), +cudnn_attention_backward (model.attention_backward
#          cudnn), +mma_attention_backward (model.attention_backward mma: the short kernel's mma.sync
#          form), +cudnn_attention_forward (model.attention_forward cudnn), +no_cuda_graph (plugin.cuda_graph off) or
#          +no_gemm_autotune (plugin.gemm_autotune off), +no_gemm_autotune_wide (plugin.gemm_autotune_wide off),
#          each a column of its own)
#          --np N  --steps N  --warmup N  --precision bf16|fp16 (of the mixed-precision plugins)
#          --name GRID  --no-build
#          --with-pytorch   (GPU) also time PyTorch eager and torch.compile (tests/gpu/pytorch_baseline.py)
#                           at the same batch sizes, into the same folder and table
#          --profile        time every op in a few more steps (benchmark.profile; vit_results prints it)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

batch_sizes="8 32"
plugins=""
np=""
steps=""
warmup=""
precision=bf16
name="bench_$(date +%Y%m%d_%H%M%S)"
build=1
with_pytorch=0
profile=0
while [ $# -gt 0 ]; do
  case "$1" in
    --batch-sizes) batch_sizes=$2; shift 2 ;;
    --plugins) plugins=$2; shift 2 ;;
    --np) np=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --with-pytorch) with_pytorch=1; shift ;;
    --profile) profile=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "run_benchmark.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

[ "$build" -eq 1 ] && bash run_tests.sh --build-only
BUILD_DIR=${BUILD_DIR:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

gpus=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L | wc -l)
fi
if [ "$gpus" -gt 0 ]; then
  config=configs/benchmark.yaml
  device=cuda
  np=${np:-$gpus}
  default_plugins="torch_ddp torch_ddp_fp16 low_level_zero:2 gemini:0 gemini:1"
  # The example's hybrid layout is tp2 x pp2 (4 GPUs); on 2 or 6 GPUs tensor parallel alone.
  if [ $((np % 4)) -eq 0 ]; then default_plugins+=" hybrid_parallel:tp2pp2"
  elif [ $((np % 2)) -eq 0 ]; then default_plugins+=" hybrid_parallel:tp2pp1"; fi
  plugins=${plugins:-$default_plugins}
  extra=()
else
  # No GPU: the small CPU model of the quickstart, synthetic images.
  config=configs/quickstart.yaml
  device=cpu
  np=${np:-2}
  plugins=${plugins:-"torch_ddp"}
  steps=${steps:-5}
  warmup=${warmup:-2}
  extra=(--set run.cpu_threads=1)
fi

out=results/$name
mkdir -p "$out"
echo "run_benchmark.sh: $config on $np rank(s), $device; plugins: $plugins; batch sizes: $batch_sizes -> $out"
for entry in $plugins; do
  # +recompute_gelu / +recompute_norm / +recompute: activation recompute; +attention_atomics:
  # cuDNN's backward with model.attention_deterministic=false; +cudnn_attention_backward:
  # model.attention_backward=cudnn; +mma_attention_backward: model.attention_backward=mma;
  # +cudnn_attention_forward: model.attention_forward=cudnn;
  # +no_cuda_graph: plugin.cuda_graph=false;
  # +no_gemm_autotune: plugin.gemm_autotune=false; +no_gemm_autotune_wide: plugin.gemm_autotune_wide=false
  # (the heuristic's list only).
  # Each makes a column of its own.
  recompute=()
  rtag=""
  while [[ "$entry" =~ ^(.*)\+(recompute_gelu|recompute_norm|recompute|attention_atomics|cudnn_attention_backward|mma_attention_backward|cudnn_attention_forward|no_cuda_graph|no_gemm_autotune|no_gemm_autotune_wide)$ ]]; do
    entry=${BASH_REMATCH[1]}
    if [ "${BASH_REMATCH[2]}" = attention_atomics ]; then
      recompute+=(--set model.attention_deterministic=false --set model.attention_backward=cudnn)
    elif [ "${BASH_REMATCH[2]}" = cudnn_attention_backward ]; then
      recompute+=(--set model.attention_backward=cudnn)
    elif [ "${BASH_REMATCH[2]}" = mma_attention_backward ]; then
      recompute+=(--set model.attention_backward=mma)
    elif [ "${BASH_REMATCH[2]}" = cudnn_attention_forward ]; then
      recompute+=(--set model.attention_forward=cudnn)
    elif [ "${BASH_REMATCH[2]}" = no_cuda_graph ]; then
      recompute+=(--set plugin.cuda_graph=false)
    elif [ "${BASH_REMATCH[2]}" = no_gemm_autotune ]; then
      recompute+=(--set plugin.gemm_autotune=false)
    elif [ "${BASH_REMATCH[2]}" = no_gemm_autotune_wide ]; then
      recompute+=(--set plugin.gemm_autotune_wide=false)
    else
      recompute+=(--set "train.${BASH_REMATCH[2]}=true")
    fi
    rtag="_${BASH_REMATCH[2]}$rtag"
  done
  plugin=${entry%%:*}
  option=()
  tag=$plugin
  if [ "$entry" != "$plugin" ] && [ "$plugin" = gemini ]; then  # gemini:F
    option=(--set plugin.offload_optim_frac="${entry#*:}")
    tag=${plugin}_offload${entry#*:}
  elif [ "$entry" != "$plugin" ] && [ "$plugin" = hybrid_parallel ]; then  # hybrid_parallel:tpTppP[mbM][zero1]
    layout=${entry#*:}
    if ! [[ "$layout" =~ ^tp([0-9]+)pp([0-9]+)(mb([0-9]+))?(zero1)?$ ]]; then
      echo "run_benchmark.sh: $entry: expected hybrid_parallel:tpTppP[mbM][zero1], e.g. hybrid_parallel:tp2pp2mb4" >&2
      exit 2
    fi
    tp=${BASH_REMATCH[1]} pp=${BASH_REMATCH[2]} mb=${BASH_REMATCH[4]:-${BASH_REMATCH[2]}}
    [ "$pp" -eq 1 ] && mb=1
    option=(--set plugin.tp_size="$tp" --set plugin.pp_size="$pp" --set plugin.num_microbatches="$mb")
    [ -n "${BASH_REMATCH[5]}" ] && option+=(--set plugin.zero_stage=1)
    tag=${plugin}_tp${tp}pp${pp}mb${mb}${BASH_REMATCH[5]:+_zero1}
  elif [ "$entry" != "$plugin" ]; then  # low_level_zero:S
    option=(--set plugin.stage="${entry#*:}")
    tag=${plugin}_stage${entry#*:}
  fi
  prec=fp32
  # The mixed-precision plugins run in --precision on the GPU (fp32 on the CPU).
  [ "$plugin" != torch_ddp ] && [ "$device" = cuda ] && prec=$precision
  for bs in $batch_sizes; do
    args=(--set benchmark.enabled=true --set run.device="$device" --set plugin.name="$plugin"
          --set plugin.precision="$prec" --set train.batch_size="$bs" --set run.output_dir="$out"
          --set run.name="${tag}${rtag}_bs${bs}" --set run.progress=false "${option[@]}" "${recompute[@]}")
    [ -n "$steps" ] && args+=(--set benchmark.steps="$steps")
    [ "$profile" -eq 1 ] && args+=(--set benchmark.profile=true)
    [ -n "$warmup" ] && args+=(--set benchmark.warmup_steps="$warmup")
    mpirun --bind-to none -np "$np" "$BUILD_DIR/vit_hpc" "$config" "${args[@]}" "${extra[@]}"
  done
done
if [ "$with_pytorch" -eq 1 ] && [ "$device" = cuda ]; then
  # shellcheck disable=SC2086
  python3 tests/gpu/pytorch_baseline.py --output "$out" --batch-sizes $batch_sizes --steps "${steps:-20}" \
    --warmup "${warmup:-5}"
fi
"$BUILD_DIR/vit_results" --output "$out/summary.md" "$out"
echo
cat "$out/summary.md"
