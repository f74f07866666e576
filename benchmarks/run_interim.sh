#!/usr/bin/env bash
# Superseded by benchmarks/speed/run_all.sh (the whole speed study, resumable); kept for old notes.
#   benchmarks/run_interim.sh [TEST_DIR] [run_all.sh options...]
# TEST_DIR: a Kaldi-style dir of test utterances (default: the ship subset made by
# recipes/accents_en/local/ship_interim.sh); 80 utterances of it, balanced over accents, are measured.
set -euo pipefail
cd "$(dirname "$0")/.."
test_dir=${1:-exp/ship/test_subset}
shift || true
exec benchmarks/speed/run_all.sh --data "$test_dir" "$@"
