"""Error rates (CER, WER) with substitution/deletion/insertion counts.

The alignment (edit script) comes from ``rapidfuzz.distance.Levenshtein.editops``, a minimal
Levenshtein edit script over sequences of hashable items; no hand-written dynamic programming.

Units:

* CER is over characters with all white space removed: for English that is "characters without
  spaces", for Mandarin (no spaces between words) simply "characters".
* WER is over white-space separated words; a CJK character counts as one word (Mandarin has no spaces,
  so its WER equals its CER; code-switched text is split the same way).

Both texts are normalised before scoring by :func:`normalize_text`: Unicode NFKC, case folding, and
punctuation removed (an apostrophe inside a word, as in "don't", is kept).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df"
_CJK_RE = re.compile(f"([{_CJK}])")


@dataclass
class ErrorCounts:
    """Edit counts of hypotheses against references; ``ref_len`` is the number of reference units."""

    sub: int = 0
    dele: int = 0
    ins: int = 0
    ref_len: int = 0

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def rate(self) -> float:
        """Error rate in percent, ``100 * errors / max(ref_len, 1)``."""
        return 100.0 * self.errors / max(self.ref_len, 1)

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(
            self.sub + other.sub, self.dele + other.dele, self.ins + other.ins, self.ref_len + other.ref_len
        )

    def to_dict(self) -> dict[str, int]:
        return {"sub": self.sub, "del": self.dele, "ins": self.ins, "ref_len": self.ref_len}


def normalize_text(text: str) -> str:
    """NFKC, case-fold, drop punctuation (keeping in-word apostrophes), collapse white space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = text.replace("\u2581", " ")  # sentencepiece word boundary, should one leak through
    out = []
    for i, ch in enumerate(text):
        if unicodedata.category(ch).startswith("P"):
            inner = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            if ch in "'\u2019" and inner:
                out.append("'")
            else:
                out.append(" ")
        else:
            out.append(ch)
    return " ".join("".join(out).split())


def cer_units(text: str) -> list[str]:
    """Characters of normalised ``text`` without white space."""
    return [c for c in normalize_text(text) if not c.isspace()]


def wer_units(text: str) -> list[str]:
    """Words of normalised ``text``; every CJK character is a word of its own."""
    return _CJK_RE.sub(r" \1 ", normalize_text(text)).split()


def align_counts(ref: list[str], hyp: list[str]) -> ErrorCounts:
    """Substitutions, deletions, insertions of ``hyp`` against ``ref`` (a minimal edit script)."""
    sub = dele = ins = 0
    for op in Levenshtein.editops(ref, hyp):
        if op.tag == "replace":
            sub += 1
        elif op.tag == "delete":
            dele += 1
        else:
            ins += 1
    return ErrorCounts(sub, dele, ins, len(ref))


def cer_counts(ref: str, hyp: str) -> ErrorCounts:
    """Character-level counts (see module docstring for the units)."""
    return align_counts(cer_units(ref), cer_units(hyp))


def wer_counts(ref: str, hyp: str) -> ErrorCounts:
    """Word-level counts (see module docstring for the units)."""
    return align_counts(wer_units(ref), wer_units(hyp))
