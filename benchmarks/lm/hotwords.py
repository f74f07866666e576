"""Hotword recall: rare words of a split with and without ``--hotwords``, and WER elsewhere.

    python -m benchmarks.lm.hotwords --model models/accents-en-qifusion \\
        --data data/benchmark/test --train data/benchmark/train --lm /tmp/lm_train \\
        --boosts 3,6 --out benchmarks/results/lm_hotwords_test.json

The set: every word of the split's references of at least ``--min-len`` letters that occurs at most
``--max-train-count`` times in the training text (0 = not in the LM's lexicon: OOV) forms one hotword
list, as a user would list the names and terms of a domain. Recall = found occurrences / reference
occurrences (a hypothesis word counts once per reference occurrence in the same utterance), for OOV
and in-vocabulary rare words separately. "Elsewhere" = the utterances without any listed word: their
WER with the list must not rise by more than a point. Mode ``lm_beam``, LmOptions defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from benchmarks.lm.common import encode_split, run_search
from qifusion.decode.lm_search import LexiconLm
from qifusion.eval.metrics import ErrorCounts, wer_counts
from qifusion.fileio import atomic_write_text
from qifusion.lm.build import read_sentences
from qifusion.lm.files import Hotword


def recall(rows: list[dict], hyps: dict[str, str], words: set[str]) -> dict[str, float]:
    """Found/total reference occurrences of ``words`` over ``rows``."""
    found = total = 0
    for r in rows:
        ref = Counter(w for w in r["ref"].split() if w in words)
        hyp = Counter(hyps[r["utt"]].split())
        total += sum(ref.values())
        found += sum(min(n, hyp[w]) for w, n in ref.items())
    return {"found": found, "total": total, "recall": round(found / max(total, 1), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--train", type=Path, required=True, help="the text the LM was built from (data dir)")
    ap.add_argument("--lm", type=Path, required=True)
    ap.add_argument("--boosts", default="3")
    ap.add_argument("--max-train-count", type=int, default=2)
    ap.add_argument("--min-len", type=int, default=4)
    ap.add_argument("--chunk-size", type=int, default=-1)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qifusion-lm-bench"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    loaded, rows = encode_split(a.model, a.data, a.chunk_size, a.cache)
    lm = LexiconLm(a.lm, loaded.tokenizer)
    train = Counter(w for s in read_sentences(a.train) for w in s.split())
    rare = sorted({w for r in rows for w in r["ref"].split()
                   if len(w) >= a.min_len and train[w] <= a.max_train_count and w.isalpha()})
    oov = {w for w in rare if w not in lm.lexicon}
    iv = set(rare) - oov
    rest = [r for r in rows if not set(r["ref"].split()) & set(rare)]

    def summary(hyps: dict[str, str]) -> dict:
        wer = ErrorCounts()
        for r in rest:
            wer += wer_counts(r["ref"], hyps[r["utt"]])
        return {"recall_all": recall(rows, hyps, set(rare)), "recall_oov": recall(rows, hyps, oov),
                "recall_iv_rare": recall(rows, hyps, iv), "wer_elsewhere": round(wer.rate, 2)}

    plain = run_search(loaded, rows, mode="lm_beam", lm=lm)
    out = {"model": str(a.model), "data": str(a.data), "lm": str(a.lm), "chunk_size": a.chunk_size,
           "hotwords": len(rare), "oov": len(oov), "utts_elsewhere": len(rest),
           "without": {"wer": plain["wer"], **summary(plain["hyps"])}, "with": []}
    print(json.dumps(out["without"]), file=sys.stderr, flush=True)
    for b in map(float, a.boosts.split(",")):
        hw = tuple(Hotword(w, b) for w in rare)
        r = run_search(loaded, rows, mode="lm_beam", lm=lm, hotwords=hw)
        out["with"].append({"boost": b, "wer": r["wer"], "search_rtf": r["search_rtf"], **summary(r["hyps"])})
        print(json.dumps(out["with"][-1]), file=sys.stderr, flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
