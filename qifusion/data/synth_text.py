"""Sentence pool for the synthetic corpus: natural English from Debian main packages.

Sources (read at run time from the installed packages, nothing is downloaded):

- WordNet usage examples (``wordnet-base``): the quoted examples in ``/usr/share/wordnet/data.*`` glosses.
- Fortune cookies (``fortunes``, ``fortunes-min``): ``/usr/share/games/fortunes/*``, split into sentences.
  The offensive collection (``off/``, package ``fortunes-off``) is never read, and files listed in
  :data:`FORTUNE_DENYLIST` (sensitive topics, ASCII art, code) are left out too.

Each sentence is normalised to lowercase ``a-z``, apostrophe and single spaces; sentences with digits,
symbols, abbreviations or letter-spelled words (no vowel) are dropped rather than "fixed", so the
transcript is exactly what espeak-ng reads. Kept: 5..20 words, deduplicated, sorted (deterministic).

**Demo reservation** (issue 16): a fixed 1/:data:`DEMO_SHARE` of all sentences, chosen by a hash of the
sentence text alone (:func:`demo_reserved`), is the only pool the ``demo`` preset draws from, and no other
preset (train, dev or test) ever draws from it (:func:`corpus_pool`), so the demo that ``make demo``
evaluates the shipped models on shares no sentence with any corpus they can be trained on, whatever the
preset, seed or size.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

from qifusion.errors import UserError

WORDNET_DIR = Path("/usr/share/wordnet")
FORTUNE_DIR = Path("/usr/share/games/fortunes")
FORTUNE_DENYLIST = frozenset(
    {"art", "ascii-art", "drugs", "ethnic", "men-women", "politics", "perl", "translate-me", "linux",
     "linuxcookie", "off", "zippy"}
)
MIN_WORDS = 5
MAX_WORDS = 20
DEMO_SHARE = 8  # one sentence in DEMO_SHARE is reserved for the demo preset

_QUOTED = re.compile(r'"([^"]{8,400})"')
_SENT_END = re.compile(r"(?<=[.!?])\s+")
_DASHES = re.compile(r"[-\u2010-\u2015_/]+")
_DROP_PUNCT = re.compile(r"[.,;:!?\"()\[\]{}\u201c\u201d\u00ab\u00bb`*]")
_OK = re.compile(r"^[a-z' ]+$")
_VOWEL = re.compile(r"[aeiouy]")
_ABBREV = re.compile(r"\b(?:[a-z]\.){2,}|\b(?:mr|mrs|ms|dr|st|jr|sr|vs|etc|prof|gen|col|lt|sgt|rev)\.",
                     re.IGNORECASE)


def normalize_sentence(raw: str, *, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> str | None:
    """Normalise one sentence to ``[a-z' ]`` words, or return None when it is not clean enough.

    ``"Don't look back -- something might be gaining on you."`` ->
    ``"don't look back something might be gaining on you"``.
    """
    text = unicodedata.normalize("NFKC", raw).replace("\u2019", "'").replace("\u2018", "'")
    if _ABBREV.search(text):
        return None
    text = _DASHES.sub(" ", text.lower())
    text = _DROP_PUNCT.sub(" ", text)
    words = []
    for w in text.split():
        w = w.strip("'")
        if not w:
            continue
        if not _OK.match(w) or not _VOWEL.search(w) or "''" in w:
            return None
        if len(w) == 1 and w not in ("a", "i"):
            return None
        words.append(w)
    if not (min_words <= len(words) <= max_words):
        return None
    return " ".join(words)


def wordnet_examples(root: Path = WORDNET_DIR) -> list[str]:
    """Raw quoted usage examples from WordNet ``data.*`` files (gloss text after ``|``)."""
    out: list[str] = []
    for path in sorted(root.glob("data.*")):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue  # licence header
                out.extend(_QUOTED.findall(line.split("|", 1)[1]))
    return out


def fortune_sentences(root: Path = FORTUNE_DIR) -> list[str]:
    """Raw sentences from the (non-offensive) fortune files; attributions (``-- Author``) dropped."""
    out: list[str] = []
    if not root.is_dir():
        return out
    for path in sorted(root.iterdir()):
        if not path.is_file() or path.suffix or path.name in FORTUNE_DENYLIST:
            continue  # .dat/.u8 indexes and left-out files
        text = path.read_text(encoding="utf-8", errors="replace")
        for entry in text.split("\n%\n"):
            lines = [ln for ln in entry.splitlines() if not ln.strip().startswith("--")]
            body = " ".join(ln.strip() for ln in lines)
            if ":" in body[:25]:
                continue  # dialogue / "Q: ... A: ..." formats read badly
            out.extend(s for s in _SENT_END.split(body) if s)
    return out


def sentence_pool(*, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """All clean, unique sentences from WordNet + fortunes, sorted (same list on every machine
    with the same package versions). A new list each call (callers may shuffle it).

    Raises UserError naming the packages when none are installed.
    """
    return list(_pool(min_words, max_words))


def demo_reserved(sentence: str) -> bool:
    """Whether ``sentence`` (normalised) belongs to the demo's reserved pool: a property of the text
    alone (first byte of its SHA-1), so it cannot depend on a preset, seed or corpus size."""
    return hashlib.sha1(sentence.encode("utf-8")).digest()[0] % DEMO_SHARE == 0


def demo_pool(*, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """The sorted sentences reserved for the ``demo`` preset (see the module doc)."""
    return [s for s in _pool(min_words, max_words) if demo_reserved(s)]


def corpus_pool(*, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """The sorted sentences every preset but ``demo`` draws from: the pool minus the demo reservation."""
    return [s for s in _pool(min_words, max_words) if not demo_reserved(s)]


@lru_cache(maxsize=4)
def _pool(min_words: int, max_words: int) -> tuple[str, ...]:
    raw = _raw_sentences()
    pool = {s for s in (normalize_sentence(r, min_words=min_words, max_words=max_words) for r in raw) if s}
    if not pool:
        raise UserError(
            f"no sentences found in {WORDNET_DIR} or {FORTUNE_DIR}: install the Debian packages "
            "'wordnet-base' and 'fortunes' (apt-get install wordnet-base fortunes), or run 'make setup'"
        )
    return tuple(sorted(pool))


@lru_cache(maxsize=1)
def _raw_sentences() -> tuple[str, ...]:
    return tuple(wordnet_examples() + fortune_sentences())
