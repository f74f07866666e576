#!/usr/bin/env bash
# A/B speed check of this checkout ("new") against a reference checkout ("ref", e.g. the main branch)
# on one pinned core, for a shared machine where absolute timings drift: every measurement runs for
# both sides, interleaved, in one run, with the existing scripts of each checkout.
#
#   benchmarks/speed/ab.sh REF_CHECKOUT OUT_DIR [--cpus LIST] [--threads N] [--reps R] [--model DIR]
#                          [--data TEST_DIR] [--streams 1,8,16,32] [--no-rtf]
#
# REF_CHECKOUT "-" measures this checkout alone. --cpus: taskset CPU list (default 1; --core N is the
# same); --threads: intra-op threads of the encoder benchmark (its chunk steps keep 1, the Recognizer's
# default) and of the server (OMP_NUM_THREADS); the Recognizer latency runs always use 1 thread.
#
# Writes into OUT_DIR (one file per script and side; *_ref.* / *_new.*):
#   encoder_small_ct1_{ref,new}.jsonl  small encoder, chunk 16, 1 thread per chunk step (one line a rep)
#   latency_{ref,new}.jsonl            Recognizer per-chunk compute and final latency, torch and ONNX,
#                                      chunk 16, 4 left chunks, ctc_prefix_beam, 1 thread (a line a rep)
#   speed_rtf_{ref,new}.json           offline RTF, torch vs ONNX, chunk 16, 4 left chunks, 1 thread
#   serve_load_{torch,onnx}_{ref,new}_rep{R}.json   qifusion serve with 1, 8, 16, 32 real-time streams
# ONNX exports of MODEL by each side's exporter go to exp/speed/ab/onnx_{ref,new} (made when missing).
set -euo pipefail
new=$(cd "$(dirname "$0")/../.." && pwd)
ref=-
sides="new"
if [[ $1 != - ]]; then ref=$(cd "$1" && pwd); sides="ref new"; fi
out=$(mkdir -p "$2" && cd "$2" && pwd)
shift 2
core=1
threads=1
reps=3
model=models/accents-en-qifusion
data=data/benchmark/test
streams=1,8,16,32
do_rtf=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --core|--cpus) core=$2; shift ;;
    --threads) threads=$2; shift ;;
    --reps) reps=$2; shift ;;
    --model) model=$2; shift ;;
    --data) data=$2; shift ;;
    --streams) streams=$2; shift ;;
    --no-rtf) do_rtf=0 ;;
    *) echo "ab.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
py=${PYTHON:-$new/.venv/bin/python}
model=$(cd "$new" && realpath "$model")
data=$(cd "$new" && realpath "$data")
work=$new/exp/speed/ab
mkdir -p "$work"
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1

# run SIDE MODULE ARGS...: a benchmark script of SIDE's checkout, pinned to the core. Checkouts where
# benchmarks/speed is not yet a package run it by path.
run() {
  local side=$1 mod=$2; shift 2
  local dir=$new
  [[ $side == ref ]] && dir=$ref
  if [[ -f $dir/benchmarks/speed/__init__.py ]]; then
    (cd "$dir" && PYTHONPATH=$dir taskset -c "$core" "$py" -m "benchmarks.speed.$mod" "$@")
  else
    (cd "$dir" && PYTHONPATH=$dir taskset -c "$core" "$py" "benchmarks/speed/$mod.py" "$@")
  fi
}

rev() { git -C "$1" rev-parse --short HEAD 2>/dev/null || echo "${AB_NEW_REV:-not a git checkout}"; }
echo "ab.sh: ref $ref ($([[ $ref == - ]] && echo none || rev "$ref")), new $new ($(rev "$new")),"\
     "cpus $core, threads $threads, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/README.txt"
run new speed_common subset --data "$data" --num 80 --out "$work/test_subset"
for side in $sides; do
  dir=$new; [[ $side == ref ]] && dir=$ref
  if [[ ! -s $work/onnx_$side/export.json ]]; then
    (cd "$dir" && PYTHONPATH=$dir taskset -c "$core" "$py" -m qifusion export --model "$model" \
      --out "$work/onnx_$side")
  fi
done
wav=$(PYTHONPATH=$new "$py" -c "
from pathlib import Path
from qifusion.data.manifest import load_data_dir
print(max(load_data_dir(Path('$work/test_subset')), key=lambda u: u.duration or 0.0).audio)")
rm -f "$out"/encoder_small_ct1_*.jsonl "$out"/latency_*.jsonl "$out"/serve_load_*.json
for rep in $(seq "$reps"); do
  for side in $sides; do
    OMP_NUM_THREADS=$threads run $side encoder --size small --threads "$threads" --chunk-threads 1 \
      --parts stream --repeats 5 \
      >> "$out/encoder_small_ct1_$side.jsonl"
    run $side latency --model "$model" --chunk-size 16 --left-chunks 4 --wav "$wav" --threads 1 \
      >> "$out/latency_$side.jsonl"
    run $side latency --model "$work/onnx_$side" --backend onnx --chunk-size 16 --wav "$wav" --threads 1 \
      >> "$out/latency_$side.jsonl"
    for b in torch onnx; do
      m=$model; [[ $b == onnx ]] && m=$work/onnx_$side
      OMP_NUM_THREADS=$threads run $side serve_load --model "$m" --backend $b --data "$work/test_subset" \
        --streams "$streams" --utts 1 --out "$out/serve_load_${b}_${side}_rep$rep.json" > /dev/null
    done
  done
done
for side in $sides; do
  [[ $do_rtf == 1 ]] || break
  run $side rtf --model "$model" --onnx "$work/onnx_$side" --backends torch,onnx --data "$work/test_subset" \
    --num-utts 40 --threads 1 --modes ctc_greedy,attention_rescoring --chunk-sizes 16 --left-chunks 4 \
    --repeats 3 --out "$out/speed_rtf_$side.json" > /dev/null
done
echo "ab.sh: done (load $(cut -d' ' -f1-3 /proc/loadavg)); results in $out" | tee -a "$out/README.txt"
