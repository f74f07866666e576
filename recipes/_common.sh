# shellcheck shell=bash
# Shared helpers of recipes/*/run.sh: strict mode, `--name value` options, stage selection, logging,
# and how qifusion is run (one process or torchrun). A run.sh sources it first, then defines its
# variables (their defaults) and a `usage` text, then parses the command line:
#
#   . "$(dirname "$0")/../_common.sh"
#   stage=0; stop_stage=3; data=data/x          # every variable is an option: --stop-stage 2, --data d
#   usage="..."; parse_options "$@"
#   if run_stage 1 "train"; then qifusion_train "$config" "$data" "$exp" ...; fi
#
# Environment: QIFUSION (the qifusion command, may hold words: "python -m qifusion"; default: the
# project's .venv/bin/qifusion, else `qifusion` on PATH), PYTHON (for torchrun and helper scripts;
# default: the project's .venv/bin/python, else python3).
set -euo pipefail

QIFUSION_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RECIPE_NAME=$(basename "$(cd "$(dirname "$0")" && pwd)")

if [[ -z "${QIFUSION:-}" ]]; then
  if [[ -x "$QIFUSION_ROOT/.venv/bin/qifusion" ]]; then QIFUSION="$QIFUSION_ROOT/.venv/bin/qifusion"
  else QIFUSION=qifusion; fi
fi
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$QIFUSION_ROOT/.venv/bin/python" ]]; then PYTHON="$QIFUSION_ROOT/.venv/bin/python"
  else PYTHON=python3; fi
fi
read -r -a QIFUSION_CMD <<< "$QIFUSION"

log() { echo "$(date '+%F %T') [$RECIPE_NAME] $*" >&2; }
die() { log "error: $*"; exit 1; }

# Run a command after logging it.
run() { log "+ $*"; "$@"; }

# The qifusion command ($QIFUSION) with arguments.
qf() { run "${QIFUSION_CMD[@]}" "$@"; }

# parse_options "$@": `--foo-bar VALUE` or `--foo-bar=VALUE` sets the existing variable foo_bar.
parse_options() {
  local _arg _name _value _var  # leading underscores: no option can name these
  while (($#)); do
    _arg=$1
    case $_arg in
      -h|--help) echo "${usage:-}"; exit 0 ;;
      --*=*) _name=${_arg%%=*}; _value=${_arg#*=}; shift ;;
      --*) _name=$_arg; (($# >= 2)) || die "option $_arg needs a value"; _value=$2; shift 2 ;;
      *) die "unexpected argument '$_arg' (options look like --name value; see --help)" ;;
    esac
    _var=${_name#--}; _var=${_var//-/_}
    [[ $_var =~ ^[a-z][a-z0-9_]*$ ]] && declare -p "$_var" >/dev/null 2>&1 \
      || die "unknown option $_name (see --help)"
    printf -v "$_var" '%s' "$_value"
  done
  [[ $stage =~ ^[0-9]+$ ]] || die "--stage must be a stage number, got '$stage'"
  [[ $stop_stage =~ ^[0-9]+$ ]] || die "--stop-stage must be a stage number, got '$stop_stage'"
  ((stage <= stop_stage)) || die "--stage $stage is after --stop-stage $stop_stage"
}

# run_stage N DESCRIPTION: true (and logged) when stage <= N <= stop_stage.
run_stage() {
  if (($1 >= stage && $1 <= stop_stage)); then log "stage $1: $2"; return 0; fi
  return 1
}

# split_words VAR ARRAY: word-split the string in VAR into the array ARRAY (empty string -> no words).
split_words() { read -r -a "$2" <<< "${!1}"; }

# chunk_name N: "full" for -1 (full context), else "chunkN"; used in decode dir names.
chunk_name() { if (($1 < 0)); then echo full; else echo "chunk$1"; fi; }

# qifusion_train CONFIG DATA EXP NPROC DEVICE EXTRA_ARGS...: one process, or torchrun when NPROC > 1
# (rendezvous from $dist_args if set, e.g. "--nnodes 2 --node-rank 0 --rdzv-endpoint host:29400",
# else --standalone). An EXP that already holds checkpoints is resumed (--resume).
qifusion_train() {
  local config=$1 data=$2 exp=$3 nproc=$4 device=$5; shift 5
  local resume=()
  if [[ -f $exp/checkpoints.json ]]; then
    log "$exp holds checkpoints: resuming"; resume=(--resume)
  fi
  local args=(train --config "$config" --data "$data" --exp "$exp" --device "$device" "${resume[@]}" "$@")
  if ((nproc > 1)); then
    local dist=()
    split_words dist_args dist
    ((${#dist[@]})) || dist=(--standalone)
    run "$PYTHON" -m torch.distributed.run "${dist[@]}" --nproc_per_node "$nproc" -m qifusion "${args[@]}"
  else
    qf "${args[@]}"
  fi
}

# model_dir_of EXP AVERAGE_NUM: the model dir a recipe decodes (EXP/avg_N, or EXP/final when N is 0).
model_dir_of() { if (($2 > 0)); then echo "$1/avg_$2"; else echo "$1/final"; fi; }

# decode_all MODEL DATA OUT_ROOT: decode DATA for every mode in $decode_modes and chunk size in
# $chunk_sizes into OUT_ROOT/<mode>_<full|chunkN>/ (report.json, report.md, hyp.txt, plots).
decode_all() {
  local model=$1 data=$2 out_root=$3 modes chunks extra mode chunk
  split_words decode_modes modes
  split_words chunk_sizes chunks
  split_words decode_args extra
  [[ -d $model ]] || die "model dir $model not found (run the training/average stages first)"
  for mode in "${modes[@]}"; do
    for chunk in "${chunks[@]}"; do
      qf decode --model "$model" --data "$data" --mode "$mode" --chunk-size "$chunk" \
        --left-chunks "$left_chunks" --out "$out_root/${mode}_$(chunk_name "$chunk")" "${extra[@]}"
    done
  done
}

# resolve_nproc: set nproc from "auto" (visible GPUs with --device cuda, else 1); check the device.
resolve_nproc() {
  if [[ $device == cuda ]]; then
    local gpus
    gpus=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())') || die "cannot run $PYTHON"
    ((gpus > 0)) || die "--device cuda but no GPU is visible (use --device cpu for a smoke run)"
    [[ $nproc != auto ]] || nproc=$gpus
  elif [[ $device != cpu ]]; then
    die "--device must be cpu or cuda, got '$device'"
  fi
  [[ $nproc != auto ]] || nproc=1
  [[ $nproc =~ ^[1-9][0-9]*$ ]] || die "--nproc must be a positive number or auto, got '$nproc'"
}
