"""Modelling units: characters (English letters + apostrophe + word boundary; one unit per CJK char)
or sentencepiece BPE. The unit list is saved with the model as WeNet-style ``units.txt``.

Ids follow the WeNet convention: 0 ``<blank>``, 1 ``<unk>``, last ``<sos/eos>``. Text is lower-cased
and whitespace-normalised before encoding.

Char mode: a space between words becomes the unit ``▁`` (U+2581), and decoding maps it back to a
space. No boundary is emitted between two CJK characters, so Mandarin text (usually written without
spaces) becomes one unit per character; a space next to a CJK character is dropped (mixed
Mandarin/English text: ``"我 love 你"`` -> ``我 l o v e 你``). Characters not seen in the training
texts map to ``<unk>``.

BPE mode: a sentencepiece BPE model trained on the training texts (``bpe.model``, saved beside
``units.txt``); our units are its pieces (without its own ``<unk>``) between the reserved ids.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from qifusion.errors import DataError, UserError
from qifusion.fileio import atomic_write_bytes, atomic_write_text

BLANK = "<blank>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"
SPACE = "\u2581"  # "▁", the sentencepiece word-boundary mark
UNITS_FILE = "units.txt"
BPE_FILE = "bpe.model"
ENGLISH_UNITS = [*"abcdefghijklmnopqrstuvwxyz", "'", SPACE]


def is_cjk(ch: str) -> bool:
    """True for CJK ideographs (and CJK punctuation/compatibility ranges)."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2FA1F
        or 0xF900 <= cp <= 0xFAFF
        or 0x3000 <= cp <= 0x303F
    )


def normalize_text(text: str) -> str:
    """Lower-case, collapse whitespace, strip."""
    return " ".join(text.lower().split())


def char_split(text: str) -> list[str]:
    """Character units of ``text`` (see module docstring): ``"it's ok"`` -> ``i t ' s ▁ o k``."""
    words = normalize_text(text).split(" ")
    out: list[str] = []
    for word in words:
        if not word:
            continue
        if out and not is_cjk(out[-1]) and not is_cjk(word[0]):
            out.append(SPACE)
        out.extend(word)
    return out


class Tokenizer:
    """Text <-> unit ids. Build with :meth:`build`, persist with :meth:`save` / :meth:`load`.

    Attributes: ``units`` (id -> unit), ``token_type`` ("char" or "bpe"), ``vocab_size``,
    ``blank_id`` (0), ``unk_id`` (1), ``sos_eos_id`` (vocab_size - 1).
    """

    blank_id = 0
    unk_id = 1

    def __init__(
        self, units: Sequence[str], *, token_type: str = "char", bpe_model: str | None = None
    ) -> None:
        units = list(units)
        if len(units) < 3 or units[0] != BLANK or units[1] != UNK or units[-1] != SOS_EOS:
            raise UserError(f"unit list must start with {BLANK}, {UNK} and end with {SOS_EOS}")
        if len(set(units)) != len(units):
            dup = sorted({u for u in units if units.count(u) > 1})
            raise UserError(f"unit list has duplicate units: {dup[:5]}")
        if token_type not in ("char", "bpe"):
            raise UserError(f"token_type must be 'char' or 'bpe', got {token_type!r}")
        self.units = units
        self.token_type = token_type
        self._index = {u: i for i, u in enumerate(units)}
        self._sp = None
        self._bpe_model = bpe_model
        if token_type == "bpe":
            if bpe_model is None:
                raise UserError("token_type 'bpe' needs a sentencepiece model file (bpe.model)")
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_file=str(bpe_model))

    # ---------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        return len(self.units)

    @property
    def sos_eos_id(self) -> int:
        return len(self.units) - 1

    def id2token(self, idx: int) -> str:
        """The unit of id ``idx``."""
        return self.units[idx]

    def token2id(self, unit: str) -> int:
        """The id of ``unit`` (``unk_id`` if unknown)."""
        return self._index.get(unit, self.unk_id)

    # ---------------------------------------------------------------- encode / decode
    def tokenize(self, text: str) -> list[str]:
        """Units (strings) of ``text``; pieces not in the unit list are kept (they encode to unk)."""
        if self._sp is not None:
            return list(self._sp.encode(normalize_text(text), out_type=str))
        return char_split(text)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; unknown characters/pieces -> ``unk_id``."""
        return [self._index.get(u, self.unk_id) for u in self.tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; blank and sos/eos are dropped, ``▁`` becomes a space (runs of them one space)."""
        pieces = [self.units[int(i)] for i in ids if int(i) not in (self.blank_id, self.sos_eos_id)]
        return " ".join("".join(pieces).replace(SPACE, " ").split())

    # ---------------------------------------------------------------- build / save / load
    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        *,
        token_type: str = "char",
        bpe_vocab_size: int = 500,
        workdir: str | os.PathLike[str] | None = None,
    ) -> Tokenizer:
        """Unit list from training ``texts``.

        Char: every character seen (plus a-z, apostrophe and ``▁`` when any Latin letter is seen),
        sorted by code point. BPE: trains sentencepiece (``model_type=bpe``) into ``workdir``.
        """
        texts = [normalize_text(t) for t in texts if t and t.strip()]
        if not texts:
            raise DataError("cannot build a tokenizer: no non-empty training transcripts")
        if token_type == "char":
            seen: set[str] = set()
            for t in texts:
                seen.update(char_split(t))
            if any("a" <= c <= "z" for c in seen):
                seen.update(ENGLISH_UNITS)
            seen -= {BLANK, UNK, SOS_EOS}
            return cls([BLANK, UNK, *sorted(seen), SOS_EOS], token_type="char")
        if token_type == "bpe":
            if workdir is None:
                raise UserError("token_type 'bpe' needs a workdir to train sentencepiece in")
            model = _train_bpe(texts, vocab_size=bpe_vocab_size, workdir=Path(workdir))
            return cls.from_bpe_model(model)
        raise UserError(f"token_type must be 'char' or 'bpe', got {token_type!r}")

    @classmethod
    def from_bpe_model(cls, model_file: str | os.PathLike[str]) -> Tokenizer:
        """Units from a sentencepiece model: its pieces except its control/unknown ones."""
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(model_file))
        pieces = [
            sp.id_to_piece(i)
            for i in range(sp.get_piece_size())
            if not (sp.is_unknown(i) or sp.is_control(i))
        ]
        pieces = [p for p in pieces if p not in (BLANK, UNK, SOS_EOS)]
        return cls([BLANK, UNK, *pieces, SOS_EOS], token_type="bpe", bpe_model=str(model_file))

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``units.txt`` (``unit id`` per line) and, for BPE, ``bpe.model`` atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self._bpe_model is not None:
            src = Path(self._bpe_model)
            if src.resolve() != (d / BPE_FILE).resolve():
                atomic_write_bytes(d / BPE_FILE, src.read_bytes())
            self._bpe_model = str(d / BPE_FILE)
        atomic_write_text(d / UNITS_FILE, "".join(f"{u} {i}\n" for i, u in enumerate(self.units)))

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Tokenizer:
        """Read ``units.txt`` (+ ``bpe.model`` if present) from ``directory``."""
        d = Path(directory)
        path = d / UNITS_FILE
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as e:
            raise UserError(f"unit list not found: {path}") from e
        units: list[str] = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) != len(units):
                raise UserError(f"{path}:{n}: expected 'unit {len(units)}', got {line!r}")
            units.append(parts[0])
        bpe = d / BPE_FILE
        if bpe.exists():
            return cls(units, token_type="bpe", bpe_model=str(bpe))
        return cls(units, token_type="char")


def _train_bpe(texts: list[str], *, vocab_size: int, workdir: Path) -> Path:
    """Train a sentencepiece BPE model on ``texts`` in ``workdir``; return the model path."""
    import sentencepiece as spm

    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "bpe_train_text.txt"
    atomic_write_text(corpus, "".join(t + "\n" for t in texts))
    tmp_prefix = workdir / ".bpe_training"
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp_prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    out = workdir / BPE_FILE
    shutil.move(f"{tmp_prefix}.model", out)
    Path(f"{tmp_prefix}.vocab").unlink(missing_ok=True)
    return out
