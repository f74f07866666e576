"""flashlight-text vs pyctcdecode on the same encodings, LM and weights (DEV split): WER and search time.

    pip install pyctcdecode kenlm        # not project dependencies; only for this comparison
    python -m benchmarks.lm.compare_pyctcdecode --model models/accents-en-qifusion \\
        --data data/benchmark/dev --lm /tmp/lm_train --limit 320 \\
        --out benchmarks/results/lm_pyctcdecode_dev.json

Both get the same KenLM model (``lm.bin``) and unigram list (the lexicon's words). flashlight-text
runs with the LmOptions defaults (tuned on dev by tune.py); pyctcdecode's ``alpha``/``beta`` (its LM
weight and word bonus, with its own unknown-word and partial-word handling) are tuned on the same dev
utterances over ``--pyctc-grid`` at the first beam, then both run at every ``--beams`` width.
pyctcdecode has no incremental API (only whole utterances), which streaming needs; this measures
accuracy and speed only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.lm.common import encode_split, run_search
from qifusion.decode.lm_search import LexiconLm
from qifusion.decode.options import LmOptions
from qifusion.eval.metrics import ErrorCounts, cer_counts, wer_counts
from qifusion.fileio import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--lm", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=320)
    ap.add_argument("--beams", default="50,200")
    ap.add_argument("--pyctc-grid", default="0.5,1,1.6:-1,0,1,2",
                    help="alphas:betas tried at the first beam")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qifusion-lm-bench"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    import kenlm
    from pyctcdecode import Alphabet, BeamSearchDecoderCTC, LanguageModel

    loaded, rows = encode_split(a.model, a.data, -1, a.cache, a.limit)
    tok = loaded.tokenizer
    secs = sum(r["secs"] for r in rows)
    units = [tok.id2token(i) for i in range(tok.vocab_size)]
    labels = [("" if i == tok.blank_id else " " if u == "\u2581" else u if len(u) == 1 else f"<{i}>")
              for i, u in enumerate(units)]
    base = LmOptions()
    lex = LexiconLm(a.lm, tok).lexicon
    model = kenlm.Model(str(a.lm / "lm.bin"))

    def pyctc(alpha: float, beta: float, beam: int) -> dict:
        dec = BeamSearchDecoderCTC(Alphabet(labels, False),
                                   LanguageModel(model, unigrams=list(lex), alpha=alpha, beta=beta))
        cer, wer = ErrorCounts(), ErrorCounts()
        t0 = time.process_time()
        for r in rows:
            text = dec.decode(r["lp"].numpy(), beam_width=beam)
            cer += cer_counts(r["ref"], text)
            wer += wer_counts(r["ref"], text)
        row = {"decoder": "pyctcdecode", "alpha": alpha, "beta": beta, "beam": beam,
               "cer": round(cer.rate, 2), "wer": round(wer.rate, 2), "utts": len(rows),
               "search_rtf": round((time.process_time() - t0) / secs, 5)}
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row

    beams = [int(b) for b in a.beams.split(",")]
    alphas, betas = (list(map(float, x.split(","))) for x in a.pyctc_grid.split(":"))
    grid = [pyctc(al, be, beams[0]) for al in alphas for be in betas]  # pyctcdecode tuned on dev too
    best = min(grid, key=lambda g: g["wer"])
    out = list(grid)
    for beam in beams:
        opts = LmOptions(lm_weight=base.lm_weight, word_score=base.word_score, beam_size=beam)
        fl = run_search(loaded, rows, mode="lm_beam", lm=LexiconLm(a.lm, tok, opts))
        fl.pop("hyps")
        out.append({"decoder": "flashlight-text", "beam": beam, **fl})
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
        if beam != beams[0]:
            out.append(pyctc(best["alpha"], best["beta"], beam))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps({"model": str(a.model), "data": str(a.data), "lm": str(a.lm),
                                         "lm_weight": base.lm_weight, "word_score": base.word_score,
                                         "rows": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
