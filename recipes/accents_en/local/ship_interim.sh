#!/usr/bin/env bash
# Turn the interim training runs into the shipped model dirs (issue 4) and measure them.
#   recipes/accents_en/local/ship_interim.sh [EXP_ROOT=exp] [DATA=data/benchmark]
# EXP_ROOT/interim_{qifusion,baseline} are `qifusion train` runs of conf/{qifusion,baseline}_small.yaml on
# `qifusion synth --preset benchmark --seed 0`. Each is averaged (newest 3 checkpoints, float16) into
# models/accents-en-<system>, decoded on a balanced subset of the test split (held-out speakers and
# sentences) at full context and chunk 16, and given a model card made from those reports.
set -euo pipefail
exp=${1:-exp}
data=${2:-data/benchmark}
qf=".venv/bin/qifusion"
py=".venv/bin/python"
export OMP_WAIT_POLICY=PASSIVE

training_note() {
  echo "\`qifusion train --config conf/$1_small.yaml --data $data --exp $exp/interim_$1\` on \`qifusion synth" \
    "--preset benchmark --seed 0\` (6533 train utterances, 5.14 h; dev/test speakers held out), with" \
    "\`--set train.warmup_steps=400 data.max_duration=100.0\`, on one CPU thread beside the other system's run," \
    "stopped after $(basename "$(ls -t "$exp/interim_$1"/step_*.pt | head -n 1)" .pt | tr _ ' ') (about 3.6 epochs," \
    "1.8 h): an undertrained **interim** model; the results study (issue 7) replaces it." \
    "$( [ "$1" = qifusion ] && echo "Its first 385 steps used aid_weight 0.3, then 10 (docs/model.md).")"
}

subset=$exp/ship/test_subset   # 30 utterances per accent of the test split
mkdir -p "$subset"
$py - "$data/test" "$subset" <<'PY'
import sys
from collections import defaultdict
from pathlib import Path
from qifusion.data.manifest import load_data_dir, write_kaldi_dir
utts = load_data_dir(Path(sys.argv[1]))
per = defaultdict(list)
for u in utts:
    per[u.accent].append(u)
write_kaldi_dir([u for a in sorted(per) for u in per[a][:30]], Path(sys.argv[2]))
PY
only_cards=${ONLY_CARDS:-0}   # 1: rewrite the model cards from existing decodes
for sys in qifusion baseline; do
  model=models/accents-en-$sys
  if ((only_cards)); then
    $py recipes/accents_en/local/model_card.py --model "$model" --decode "$exp/ship/$sys/decode_c-1" \
      --decode "$exp/ship/$sys/decode_c16" --title "accents-en-$sys (interim demo model)" \
      --training "$(training_note "$sys")"
    continue
  fi
  $qf average --exp "$exp/interim_$sys" --num 3 --by last --out "$model" --fp16
  for c in -1 16; do
    $qf decode --model "$model" --data "$subset" --out "$exp/ship/$sys/decode_c$c" \
      --mode attention_rescoring --chunk-size "$c"
  done
  $py recipes/accents_en/local/model_card.py --model "$model" --decode "$exp/ship/$sys/decode_c-1" \
    --decode "$exp/ship/$sys/decode_c16" --title "accents-en-$sys (interim demo model)" \
    --training "$(training_note "$sys")"
done
$py recipes/_report.py --system "baseline=$exp/ship/baseline" --system "qifusion=$exp/ship/qifusion" \
  --reference baseline --out "$exp/ship/RESULTS.md"
du -sh models/*
