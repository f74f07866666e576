"""Tiny LM fixtures for the LM tests: an ARPA model and lexicon written by hand (no lmplz).

Unigrams over ``WORDS`` plus one bigram (``<s> the``): KenLM needs at least a bigram model.
"""

from __future__ import annotations

import math
from pathlib import Path

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog's", "back", "dog", "box"]


def write_lm_dir(path: Path, words: list[str] = WORDS, *, probs: dict[str, float] | None = None) -> Path:
    """An LM dir with ``lm.arpa`` (unigrams; ``probs`` overrides a word's probability) and ``lexicon.txt``."""
    path.mkdir(parents=True, exist_ok=True)
    probs = probs or {}
    base = 1.0 / (len(words) + 2)
    entries = [("<unk>", 0.001), ("<s>", None), ("</s>", base), *((w, probs.get(w, base)) for w in words)]
    lines = ["\\data\\", f"ngram 1={len(entries)}", "ngram 2=1", "", "\\1-grams:"]
    for w, p in entries:
        lp = -99.0 if p is None else math.log10(p)
        lines.append(f"{lp:.6f}\t{w}\t0")
    lines += ["", "\\2-grams:", f"{math.log10(base):.6f}\t<s> the", "", "\\end\\", ""]
    (path / "lm.arpa").write_text("\n".join(lines), encoding="utf-8")
    (path / "lexicon.txt").write_text("".join(f"{w} {' '.join(w)}\n" for w in words), encoding="utf-8")
    return path
