"""Tune the LM search weights on the DEV split (never test): grid over lm_weight x word_score.

    PYTHONPATH=. python benchmarks/lm/tune.py --model models/accents-en-qifusion \\
        --data data/benchmark/dev --lm /tmp/lm_train --out benchmarks/results/lm_tune_dev.json

The LM must be built without dev/test text (``qifusion lm --exclude``). Writes every grid point's
dev WER/CER for ``lm_beam`` and the best point; the defaults in
:class:`qifusion.decode.options.LmOptions` come from this file's ``best``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.lm.common import encode_split, run_search
from qifusion.decode.lm_search import LexiconLm
from qifusion.decode.options import LmOptions
from qifusion.fileio import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True, help="the DEV split")
    ap.add_argument("--lm", type=Path, required=True)
    ap.add_argument("--chunk-size", type=int, default=-1)
    ap.add_argument("--limit", type=int, default=None, help="first N utterances only")
    ap.add_argument("--lm-weights", default="0.5,1,1.5,2,3")
    ap.add_argument("--word-scores", default="-1,0,1,2,3")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qifusion-lm-bench"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    if "test" in a.data.name:
        sys.exit("tune.py tunes on dev only")
    loaded, rows = encode_split(a.model, a.data, a.chunk_size, a.cache, a.limit)
    grid = []
    for lw in map(float, a.lm_weights.split(",")):
        for ws in map(float, a.word_scores.split(",")):
            lm = LexiconLm(a.lm, loaded.tokenizer, LmOptions(lm_weight=lw, word_score=ws))
            r = run_search(loaded, rows, mode="lm_beam", lm=lm)
            r.pop("hyps")
            grid.append({"lm_weight": lw, "word_score": ws, **r})
            print(json.dumps(grid[-1]), file=sys.stderr, flush=True)
    best = min(grid, key=lambda g: (g["wer"], g["cer"]))
    res = {"model": str(a.model), "data": str(a.data), "lm": str(a.lm), "chunk_size": a.chunk_size,
           "utts": len(rows), "grid": grid, "best": best}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(res, indent=1) + "\n")
    print(json.dumps(best))


if __name__ == "__main__":
    main()
