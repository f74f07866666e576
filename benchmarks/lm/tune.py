"""Tune the LM search on the DEV split (never test): LM dir x lm_weight x word_score x beam for
``lm_beam``, then the attention-rescoring ``ctc_weight`` of ``lm_rescoring`` at the best point.

    python -m benchmarks.lm.tune --model models/accents-en-qifusion \\
        --data data/benchmark/dev --lm /tmp/lm3 /tmp/lm4 --out benchmarks/results/lm_tune_dev.json

The LMs must be built without dev/test text (``qifusion lm --exclude``). Writes every grid point's dev
WER/CER and the best ones; the defaults in :class:`qifusion.decode.options.LmOptions` (and the LM
order ``qifusion lm`` uses by default) come from this file's ``best``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.lm.common import encode_split, run_search
from qifusion.decode.lm_search import LexiconLm
from qifusion.decode.options import DEFAULT_CTC_WEIGHT, LmOptions
from qifusion.fileio import atomic_write_text


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True, help="the DEV split")
    ap.add_argument("--lm", type=Path, nargs="+", required=True)
    ap.add_argument("--chunk-size", type=int, default=-1)
    ap.add_argument("--limit", type=int, default=None, help="first N utterances only")
    ap.add_argument("--lm-weights", default="0.7,1,1.3,1.6,2")
    ap.add_argument("--word-scores", default="-2,-1,0")
    ap.add_argument("--beam-sizes", default="50")
    ap.add_argument("--ctc-weights", default="0.3,0.5,1,2")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qifusion-lm-bench"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    if "test" in a.data.name:
        sys.exit("tune.py tunes on dev only")
    loaded, rows = encode_split(a.model, a.data, a.chunk_size, a.cache, a.limit)
    grid = []

    def point(lm_dir: Path, mode: str, ctc_weight: float = DEFAULT_CTC_WEIGHT, **opts: float) -> dict:
        lm = LexiconLm(lm_dir, loaded.tokenizer, LmOptions(**opts))
        r = run_search(loaded, rows, mode=mode, lm=lm, ctc_weight=ctc_weight)
        r.pop("hyps")
        row = {"lm": str(lm_dir), **opts, "ctc_weight": ctc_weight, **r}
        grid.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row

    base = run_search(loaded, rows, mode="attention_rescoring")
    base.pop("hyps")
    for lm_dir in a.lm:
        for lw in _floats(a.lm_weights):
            for ws in _floats(a.word_scores):
                for beam in map(int, a.beam_sizes.split(",")):
                    point(lm_dir, "lm_beam", lm_weight=lw, word_score=ws, beam_size=beam)
    best = min(grid, key=lambda g: (g["wer"], g["cer"]))
    opts = {k: best[k] for k in ("lm_weight", "word_score", "beam_size")}
    resc = [point(Path(best["lm"]), "lm_rescoring", ctc_weight=cw, **opts) for cw in _floats(a.ctc_weights)]
    best_resc = min(resc, key=lambda g: (g["wer"], g["cer"]))
    res = {"model": str(a.model), "data": str(a.data), "chunk_size": a.chunk_size, "utts": len(rows),
           "attention_rescoring_no_lm": base, "grid": grid, "best_lm_beam": best,
           "best_lm_rescoring": best_resc}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(res, indent=1) + "\n")
    print(json.dumps({"base": base, "best_lm_beam": best, "best_lm_rescoring": best_resc}))


if __name__ == "__main__":
    main()
