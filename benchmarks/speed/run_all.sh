#!/usr/bin/env bash
# The whole speed study in one command; results as JSON under benchmarks/results/ (docs/benchmarks.md).
#
#   benchmarks/speed/run_all.sh [--force] [--quick] [--model DIR] [--onnx DIR] [--data TEST_DIR]
#                               [--num-utts N] [--results DIR]
#
# Run it on an otherwise idle machine (about 15 min on 2 cores). Resumable: a result file that exists
# is skipped unless --force. --quick is a smoke test of the scripts (tiny sizes, 1 repeat) that writes to
# exp/speed/quick_results unless --results is given; its numbers mean nothing.
#   --model    torch model dir (default models/accents-en-qifusion)
#   --onnx     use this ONNX export dir (with int8/) instead of exporting MODEL to exp/speed/onnx
#   --data     test data dir (default data/benchmark/test); N utterances balanced over accents
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_WAIT_POLICY=PASSIVE
py=${PYTHON:-.venv/bin/python}
model=models/accents-en-qifusion
data=data/benchmark/test
train_data=data/benchmark/train
num=80
res=""
onnx=""
force=0
quick=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --force) force=1 ;;
    --quick) quick=1 ;;
    --model) model=$2; shift ;;
    --onnx) onnx=$2; shift ;;
    --data) data=$2; shift ;;
    --num-utts) num=$2; shift ;;
    --results) res=$2; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "run_all.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
work=exp/speed
if [[ $quick == 1 ]]; then
  res=${res:-$work/quick_results}
  num=8; repeats=1; enc_args=(--repeats 1); streams=1,2
  train_args=(--steps 1 --max-duration 5); pb_args=(--batch 1 4 --frames 100 --repeat 1)
  lat_repeats=1
else
  res=${res:-benchmarks/results}
  repeats=3; enc_args=(); streams=1,8,16,32
  train_args=(--steps 5); pb_args=(--batch 1 16 64 --frames 250)
  lat_repeats=3
fi
mkdir -p "$res" "$work"
echo "run_all: results in $res (load average: $(cut -d' ' -f1-3 /proc/loadavg))"

# step OUT CMD...: run CMD unless OUT exists (resumable); CMD must write OUT atomically.
step() {
  local out=$1; shift
  if [[ -s $out && $force == 0 ]]; then
    echo "run_all: $out exists, skipped (--force remeasures)" >&2
    return 0
  fi
  echo "run_all: $*" >&2
  "$@"
}
# capture OUT CMD...: CMD's stdout into OUT, renamed into place only when CMD succeeds.
capture() {
  local out=$1; shift
  "$@" > "$out.tmp"
  mv "$out.tmp" "$out"
}

# ONNX export of the model (re-exported when the model is newer than the export)
if [[ -z $onnx ]]; then
  onnx=$work/onnx
  if [[ ! -s $onnx/export.json || $model/model.pt -nt $onnx/export.json ]]; then
    echo "run_all: exporting $model to $onnx (float + int8)"
    $py -m qifusion export --model "$model" --out "$onnx" --int8
  fi
fi
# the test subset shared by rtf.py (which picks the same one itself), latency and serve_load
subset=$work/test_subset
$py -m benchmarks.speed.speed_common subset --data "$data" --num "$num" --out "$subset"
wav=$($py - "$subset" <<'PY'
import sys
from pathlib import Path
from qifusion.data.manifest import load_data_dir
utts = load_data_dir(Path(sys.argv[1]), require_text=True)
print(max(utts, key=lambda u: u.duration or 0.0).audio)  # the longest: the most chunks to time
PY
)

# encoder shapes of the developers' guide (WeNet comparison), 2 threads
for size in small base; do
  step "$res/encoder_$size.json" capture "$res/encoder_$size.json" \
    $py -m benchmarks.speed.encoder --size "$size" "${enc_args[@]}"
done
# the same streaming pass with 1 intra-op thread per chunk step (the Recognizer's default chunk_threads)
for size in small base; do
  step "$res/encoder_${size}_ct1.json" capture "$res/encoder_${size}_ct1.json" \
    $py -m benchmarks.speed.encoder --size "$size" --chunk-threads 1 --parts infer,stream "${enc_args[@]}"
done
# offline RTF: torch / ONNX / ONNX int8 x 1, 2 threads x modes x full, chunk 16; fbank speed; memory
step "$res/speed_rtf.json" $py -m benchmarks.speed.rtf --model "$model" --onnx "$onnx" --data "$data" \
  --num-utts "$num" --threads 1,2 --repeats "$repeats" --out "$res/speed_rtf.json"
# training throughput of the study's two configs, 1 and 2 threads
step "$res/speed_train.json" $py -m benchmarks.speed.train_throughput --data "$train_data" --threads 1,2 \
  "${train_args[@]}" --out "$res/speed_train.json"
# streaming latency, one stream, 1 thread: torch at chunk 16, 8, 4; ONNX float / int8 at the exported chunk
latency_all() {
  for c in 16 8 4; do
    $py -m benchmarks.speed.latency --model "$model" --chunk-size "$c" --wav "$wav" --threads 1 \
      --repeats "$lat_repeats"
  done
  for d in "$onnx" "$onnx/int8"; do
    $py -m benchmarks.speed.latency --model "$d" --backend onnx --chunk-size 16 --wav "$wav" --threads 1 \
      --repeats "$lat_repeats"
  done
}
step "$res/latency.jsonl" capture "$res/latency.jsonl" latency_all
# CTC prefix beam search: vectorised vs the reference loop, 1 thread
step "$res/prefix_beam.json" env OMP_NUM_THREADS=1 $py -m benchmarks.speed.prefix_beam "${pb_args[@]}" \
  --out "$res/prefix_beam.json" > /dev/null
# server load: 1..32 real-time streams, torch / ONNX float / ONNX int8
step "$res/serve_load_torch.json" $py -m benchmarks.speed.serve_load --model "$model" --data "$subset" \
  --streams "$streams" --utts 1 --out "$res/serve_load_torch.json"
step "$res/serve_load_onnx.json" $py -m benchmarks.speed.serve_load --model "$onnx" --backend onnx \
  --data "$subset" --streams "$streams" --utts 1 --out "$res/serve_load_onnx.json"
step "$res/serve_load_onnx_int8.json" $py -m benchmarks.speed.serve_load --model "$onnx/int8" --backend onnx \
  --data "$subset" --streams "$streams" --utts 1 --out "$res/serve_load_onnx_int8.json"

# the Markdown section (benchmarks/speed/summary.py:speed_markdown), always regenerated
capture "$res/speed.md" $py -m benchmarks.speed.summary "$res"
echo "run_all: done; summary in $res/speed.md"
