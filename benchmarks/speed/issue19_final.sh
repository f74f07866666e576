#!/usr/bin/env bash
# Issue 19's speed targets, measured once on an idle machine (about 5 minutes with a reference
# checkout, half without; plus about a minute per side when the ONNX exports are not made yet):
#
#   benchmarks/speed/issue19_final.sh OUT_DIR [REF_CHECKOUT]
#
# Runs ab.sh with 2 intra-op threads on CPUs 0,1 (env THREADS, CPUS), 2 interleaved reps (REPS), serve
# load at 1, 8 and 32 real-time streams (STREAMS), no offline RTF; then writes OUT_DIR/summary.md (the
# A/B table and the target table: small encoder chunk 16 against WeNet's 39.5 ms/chunk, ONNX vs torch
# per chunk, serve p95 final latency with 32 streams) and OUT_DIR/summary.json (the targets per side).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
ref=${2:--}
py=${PYTHON:-$here/.venv/bin/python}
start=$(date +%s)
PYTHON=$py "$here/benchmarks/speed/ab.sh" "$ref" "$out" --cpus "${CPUS:-0,1}" --threads "${THREADS:-2}" \
  --reps "${REPS:-2}" --streams "${STREAMS:-1,8,32}" --no-rtf ${AB_ARGS:-}
(cd "$here" && PYTHONPATH=$here "$py" -m benchmarks.speed.ab_summary "$out" --json "$out/summary.json") \
  > "$out/summary.md"
echo "issue19_final: $(( $(date +%s) - start )) s; $out/summary.md:"
cat "$out/summary.md"
