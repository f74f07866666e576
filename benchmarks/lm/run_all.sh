#!/usr/bin/env bash
# The LM benchmark (docs/lm.md): builds the LMs, tunes the search on dev, then measures the benchmark test
# split, the held-out preset and hotwords. One thread, pinned by the caller if needed (about 40 min).
#   benchmarks/lm/run_all.sh            # env: MODEL, DATA, HELDOUT, WORK, PY
# Results: benchmarks/results/lm_*.json. Encodings are cached in /tmp/qifusion-lm-bench.
set -euo pipefail
MODEL=${MODEL:-models/accents-en-qifusion}
DATA=${DATA:-data/benchmark}
HELDOUT=${HELDOUT:-data/heldout}
WORK=${WORK:-exp/lm}
PY=${PY:-.venv/bin/python}
R=benchmarks/results
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 PYTHONPATH=.
[ -d "$HELDOUT/test" ] || $PY -m qifusion synth --out "$HELDOUT" --preset heldout --seed 0
EVAL=("$DATA/dev" "$DATA/test" "$HELDOUT/test")  # no LM may contain one of their sentences
for o in 3 4 5; do
  $PY -m qifusion lm --model "$MODEL" --text "$DATA/train" --exclude "${EVAL[@]}" --order $o --out "$WORK/train_o$o"
done
$PY -m qifusion lm --model "$MODEL" --english --exclude "${EVAL[@]}" --out "$WORK/english"
# 1. tuning on dev only: order x weights at beam 50, then the beam, then weights at the chosen beam
$PY -m benchmarks.lm.tune --model "$MODEL" --data "$DATA/dev" --lm "$WORK"/train_o{3,4,5} \
  --out $R/lm_tune_dev.json
$PY -m benchmarks.lm.tune --model "$MODEL" --data "$DATA/dev" --lm "$WORK/train_o4" --lm-weights 1.6 \
  --word-scores=-1 --beam-sizes 20,100,200 --ctc-weights 1,2,4 --out $R/lm_tune_dev_beam.json
$PY -m benchmarks.lm.tune --model "$MODEL" --data "$DATA/dev" --lm "$WORK/train_o4" --lm-weights 1.3,1.6,2 \
  --word-scores=-1.5,-1,-0.5 --beam-sizes 200 --ctc-weights 4,8 --out $R/lm_tune_dev_b200.json
# 2. with the LmOptions defaults (set from the tuning above)
$PY -m benchmarks.lm.wer --model "$MODEL" --data "$DATA/test" --lm "$WORK/train_o4" --out $R/lm_wer_test.json
$PY -m benchmarks.lm.wer --model "$MODEL" --data "$HELDOUT/test" --lm "$WORK/english" \
  --out $R/lm_wer_heldout_english.json
$PY -m benchmarks.lm.wer --model "$MODEL" --data "$HELDOUT/test" --lm "$WORK/train_o4" --chunk-sizes=-1 \
  --modes attention_rescoring,lm_beam --out $R/lm_wer_heldout_train.json
# 3. hotwords: boost chosen on dev, then test
$PY -m benchmarks.lm.hotwords --model "$MODEL" --data "$DATA/dev" --train "$DATA/train" --lm "$WORK/train_o4" \
  --boosts 2,4,6,8 --out $R/lm_hotwords_dev.json
$PY -m benchmarks.lm.hotwords --model "$MODEL" --data "$DATA/test" --train "$DATA/train" --lm "$WORK/train_o4" \
  --boosts "${TEST_BOOST:-4}" --out $R/lm_hotwords_test.json
# 4. optional (needs `pip install pyctcdecode kenlm`, not project dependencies): the decoder comparison
# $PY -m benchmarks.lm.compare_pyctcdecode --model "$MODEL" --data "$DATA/dev" --lm "$WORK/train_o4" \
#   --out $R/lm_pyctcdecode_dev.json
