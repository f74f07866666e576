"""Word-level timestamps from CTC token times.

English char units use ``▁`` (U+2581) as a separate word-boundary unit; sentencepiece pieces start a
new word with a leading ``▁``. CJK characters are one word each. Times are in seconds.
"""

from __future__ import annotations

from qifusion.data.tokenizer import SPACE, is_cjk
from qifusion.decode.stream import Word

SPECIAL = ("<blank>", "<unk>", "<sos/eos>")


def words_from_tokens(tokens: list[str], times: list[float], *, frame_shift: float) -> list[Word]:
    """Group ``tokens`` (unit strings) with start ``times`` (s) into words.

    A word starts at its first token's time and ends one output frame (``frame_shift`` s) after its
    last token's time.
    """
    words: list[Word] = []
    cur, start, last = "", 0.0, 0.0

    def flush() -> None:
        nonlocal cur
        if cur:
            words.append(Word(cur, start, last + frame_shift))
        cur = ""

    for tok, t in zip(tokens, times):
        if tok in SPECIAL:
            continue
        if tok == SPACE:
            flush()
            continue
        new_word = tok.startswith(SPACE) or (tok and is_cjk(tok[0])) or (cur and is_cjk(cur[-1]))
        piece = tok.lstrip(SPACE)
        if new_word:
            flush()
        if not cur:
            start = t
        cur += piece
        last = t
    flush()
    return words
