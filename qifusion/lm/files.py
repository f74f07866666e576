"""Reading an LM dir (lexicon, KenLM model, metadata) and hotword lists, with errors naming the file.

Lexicon line: ``word u1 u2 ...`` (the word's spelling in the model's units, no word-boundary unit).
Hotword line: ``word or phrase<TAB>boost`` or ``word or phrase boost`` (a trailing number is the boost;
without one, :data:`DEFAULT_HOTWORD_BOOST`). Boosts are log-probability bonuses per word, in (0, 20].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qifusion.data.tokenizer import SPACE, normalize_text
from qifusion.errors import UserError

LM_DIR = "lm"
LM_FILE = "lm.bin"
LEXICON_FILE = "lexicon.txt"
META_FILE = "lm.json"
# the largest boost of benchmarks/lm/hotwords.py on dev that kept WER elsewhere within 1 point
DEFAULT_HOTWORD_BOOST = 2.0
MAX_HOTWORD_BOOST = 20.0
KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"


def spell(word: str, units: set[str]) -> list[str] | None:
    """Character spelling of ``word`` in ``units`` (None when a character is not a unit)."""
    chars = list(word)
    return chars if chars and all(c in units for c in chars) else None


def resolve_lm_dir(model_dir: str | Path, lm: str | Path | None) -> Path:
    """The LM dir to use: ``lm`` when given, else ``<model_dir>/lm``; errors name what is missing."""
    path = Path(lm) if lm is not None else Path(model_dir) / LM_DIR
    if not path.is_dir():
        hint = f"build one with 'qifusion lm --model {model_dir} --text FILE'" if lm is None else "check --lm"
        raise UserError(f"LM dir {path} not found ({hint})")
    return path


def read_lexicon(path: Path, units: list[str]) -> dict[str, list[str]]:
    """``word -> spelling`` from ``lexicon.txt``; every spelling unit must be one of ``units``."""
    if not path.is_file():
        raise UserError(f"lexicon {path} not found")
    known = set(units) - {SPACE}
    lex: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise UserError(f"{path}:{n}: expected 'word unit1 unit2 ...', got {line.strip()!r}")
            bad = [u for u in parts[1:] if u not in known]
            if bad:
                raise UserError(f"{path}:{n}: word {parts[0]!r} is spelled with {bad[0]!r}, which is not a "
                                "unit of this model (was the lexicon built for another model?)")
            lex[parts[0]] = parts[1:]
    if not lex:
        raise UserError(f"lexicon {path} is empty")
    return lex


def read_meta(lm_dir: Path) -> dict[str, Any]:
    """``lm.json`` of an LM dir ({} when absent)."""
    path = lm_dir / META_FILE
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValueError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def check_lm_file(path: Path) -> None:
    """Raise :class:`UserError` unless ``path`` looks like a KenLM binary or an ARPA file."""
    if not path.is_file():
        raise UserError(f"LM file {path} not found")
    with open(path, "rb") as f:
        head = f.read(64)
    if not (head.startswith(KENLM_BINARY_MAGIC) or head.lstrip().startswith(b"\\data\\")):
        raise UserError(f"LM file {path} is neither a KenLM binary nor an ARPA file (corrupt?)")


@dataclass(frozen=True)
class Hotword:
    """A word or phrase (normalised text) and its per-word log-probability bonus."""

    text: str
    boost: float


def parse_hotwords(lines: list[str], *, source: str) -> list[Hotword]:
    """Hotwords from ``lines`` (see module docstring); ``source`` names the file/field in errors.

    An empty list (no non-blank line) is an error: the caller asked for biasing and gave nothing.
    """
    out: list[Hotword] = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        text, boost = line, DEFAULT_HOTWORD_BOOST
        head, _, tail = line.replace("\t", " ").rpartition(" ")
        try:
            boost = float(tail)
            text = head
        except ValueError:
            pass
        text = normalize_text(text)
        if not text:
            raise UserError(f"{source}:{n}: a hotword line needs a word or phrase, got {raw.strip()!r}")
        if not (0.0 < boost <= MAX_HOTWORD_BOOST) or boost != boost:
            raise UserError(f"{source}:{n}: boost of {text!r} must be in (0, {MAX_HOTWORD_BOOST:g}], "
                            f"got {boost:g}")
        out.append(Hotword(text, boost))
    if not out:
        raise UserError(f"{source}: the hotword list is empty")
    return out


def read_hotwords(path: str | Path) -> list[Hotword]:
    """Hotwords from a file (one ``word or phrase [boost]`` per line)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"hotword file {p} not found")
    return parse_hotwords(p.read_text(encoding="utf-8").splitlines(), source=str(p))


def hotwords_from_json(value: Any, *, field: str = "hotwords") -> list[Hotword]:
    """Hotwords from a JSON value: a list of strings or of ``{"word": str, "boost": number}``."""
    if not isinstance(value, list):
        raise UserError(f"field '{field}' must be a list of words or {{'word', 'boost'}} objects")
    lines = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            lines.append(item.replace("\t", " ").strip() + f" {DEFAULT_HOTWORD_BOOST}")
        elif isinstance(item, dict) and isinstance(item.get("word"), str):
            b = item.get("boost", DEFAULT_HOTWORD_BOOST)
            if isinstance(b, bool) or not isinstance(b, int | float):
                raise UserError(f"field '{field}[{i}].boost' must be a number, got {b!r}")
            lines.append(f"{item['word']} {float(b)!r}")
        else:
            raise UserError(f"field '{field}[{i}]' must be a string or {{'word': str, 'boost': number}}")
    return parse_hotwords(lines, source=f"field '{field}'")
