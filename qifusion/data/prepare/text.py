"""Mandarin transcript normalisation for prepared corpora (character units downstream).

Rules: Unicode NFKC (full-width forms -> ASCII), remove ``[...]``/``<...>`` annotation markers,
remove punctuation and symbols (Unicode categories P* and S*), upper-case Latin letters, and drop
spaces except one space between two Latin/digit words (``你好 hello world 吗`` -> ``你好HELLO WORLD吗``).
"""

from __future__ import annotations

import re
import unicodedata

MARKER_RE = re.compile(r"\[[^\]]*\]|<[^>]*>")


def _is_latin_word(tok: str) -> bool:
    return bool(tok) and tok[-1].isascii() and tok[-1].isalnum()


def normalize_mandarin(text: str) -> str:
    """Clean a Mandarin (or Mandarin/English mixed) transcript; may return ``""``."""
    text = unicodedata.normalize("NFKC", text)
    text = MARKER_RE.sub(" ", text)
    chars = []
    for c in text:
        cat = unicodedata.category(c)
        if c == "'" or c.isspace():
            chars.append(" " if c.isspace() else c)
        elif cat[0] in "PSC":
            chars.append(" ")
        else:
            chars.append(c.upper() if c.isascii() else c)
    out = ""
    for tok in "".join(chars).split():
        tok = tok.strip("'")
        if not tok:
            continue
        if out and _is_latin_word(out) and tok[0].isascii() and tok[0].isalnum():
            out += " "
        out += tok
    return out
