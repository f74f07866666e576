#!/usr/bin/env bash
# Speed measurements of the shipped models on this machine; results as JSON under benchmarks/results/.
#   benchmarks/run_interim.sh [TEST_DIR]   (run on an otherwise idle machine)
# TEST_DIR: a Kaldi-style dir of test utterances (default: the ship subset made by
# recipes/accents_en/local/ship_interim.sh).
set -euo pipefail
export OMP_WAIT_POLICY=PASSIVE
py=.venv/bin/python
qf=.venv/bin/qifusion
test_dir=${1:-exp/ship/test_subset}
res=benchmarks/results
mkdir -p "$res" exp/ship/small
model=models/accents-en-qifusion

# encoder shapes of the developers' guide (WeNet comparison)
for size in ${ENCODER_SIZES-small base}; do
  $py benchmarks/speed/encoder.py --size "$size" | tee "$res/encoder_$size.json"
done
# decoding: every mode, full context and chunk 16, on 10 utterances per accent
$py - "$test_dir" exp/ship/small <<'PY'
import sys
from collections import defaultdict
from pathlib import Path
from qifusion.data.manifest import load_data_dir, write_kaldi_dir
per = defaultdict(list)
for u in load_data_dir(Path(sys.argv[1])):
    per[u.accent].append(u)
write_kaldi_dir([u for a in sorted(per) for u in per[a][:10]], Path(sys.argv[2]))
PY
$py benchmarks/speed/decode_modes.py --model "$model" --data exp/ship/small --chunk-sizes=-1,16 \
  --out "$res/decode_modes.json"
# streaming latency (1 thread, one stream)
wav=$(head -n 1 exp/ship/small/wav.scp | cut -d' ' -f2)
for c in 16 8 4; do
  $py benchmarks/speed/latency.py --model "$model" --chunk-size "$c" --wav "$wav" --threads 1
done | tee "$res/latency.jsonl"
# server load: torch, ONNX float, ONNX int8
$qf export --model "$model" --out exp/ship/onnx --int8
$py benchmarks/speed/serve_load.py --model "$model" --data exp/ship/small --streams 1,8,16,32 --utts 1 \
  --out "$res/serve_load_torch.json"
$py benchmarks/speed/serve_load.py --model exp/ship/onnx --backend onnx --data exp/ship/small \
  --streams 1,8,16,32 --utts 1 --out "$res/serve_load_onnx.json"
$py benchmarks/speed/serve_load.py --model exp/ship/onnx/int8 --backend onnx --data exp/ship/small \
  --streams 1,8,16,32 --utts 1 --out "$res/serve_load_onnx_int8.json"
