#!/usr/bin/env bash
# Train accuracy-study runs side by side on a lent GPU machine, then pack each finished run for evaluation
# on the CPU machine (the step checkpoints stay there; what comes back is the average of the last 3, fp16).
#
#   benchmarks/accuracy/gpu_train.sh SECONDS JOBS NAME...
#
# Run from the repo root on the GPU machine, with .whl/ (wheels for its Python 3.12: the packages its image
# lacks) and .deb/ (espeak-ng, sox, wordnet-base, fortunes and their libraries, from this machine's apt)
# carried along; docs/accuracy_study.md ("On a lent GPU") gives the download commands. It synthesises the benchmark corpus there (same packages, same seed: it prints the
# md5 of the lists to compare with yours), trains at most SECONDS, packs finished runs to
# exp/gpu_out/NAME.tar, and is resumable: rerun it to continue the unfinished runs from their checkpoints.
set -uo pipefail
budget=$1 jobs=$2
shift 2
start=$SECONDS
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD  # the wheels, and qifusion from this checkout
if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
  # unpacked beside the image's own files: a file the image already has is never replaced
  mkdir -p /tmp/debroot
  for f in .deb/*.deb; do dpkg -x "$f" /tmp/debroot || exit 1; done
  cp -an /tmp/debroot/usr/. /usr/ || exit 1
  if [ -d /tmp/debroot/lib ]; then cp -an /tmp/debroot/lib/. /usr/lib/ || exit 1; fi
  ldconfig
fi
espeak-ng --version && sox --version || exit 1
if [ ! -f data/benchmark/synth_summary.json ]; then
  python3 -m qifusion synth --out data/benchmark --preset benchmark --seed 0 >/dev/null || exit 1
fi
(cd data/benchmark && md5sum train/text train/utt2dur dev/text dev/utt2dur test/text test/utt2dur)
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
for n in "$@"; do mkdir -p "exp/study/$n" && echo "$gpu" > "exp/study/$n/trained_on.txt"; done
echo "setup took $((SECONDS - start)) s; training $* on $gpu"
timeout $((budget - (SECONDS - start))) python3 -m benchmarks.accuracy.run_study --jobs "$jobs" \
  --device cuda --num-workers 3 --train-only "$@"
echo "training stopped after $((SECONDS - start)) s"
mkdir -p exp/gpu_out
last=$(python3 -c "from benchmarks.accuracy.spec import MAX_STEPS; print(MAX_STEPS)")
for n in "$@"; do
  d=exp/study/$n
  [ -f "$d/step_$last.pt" ] || { echo "$n: not finished ($(ls "$d" | grep -c '^step_') step checkpoints)"; tail -c 600 "$d.out"; continue; }
  python3 -c "from benchmarks.accuracy.eval_run import average; from benchmarks.accuracy.spec import BY_NAME; average(BY_NAME['$n'], fp16=True)" || continue
  tar -cf "exp/gpu_out/$n.tar" -C exp/study "$n.out" "$n/model" "$n/train_log.jsonl" "$n/train.log" \
    "$n/study_command.json" "$n/trained_on.txt" "$n/checkpoints.json" "$n/config.yaml" "$n/units.txt" \
    "$n/accents.txt" "$n/cmvn.json" && echo "$n: packed $(du -h "exp/gpu_out/$n.tar" | cut -f1)"
done
