"""Utterance manifests: read Kaldi-style dirs, jsonl manifests and lhotse cuts; write Kaldi dirs.

Supported inputs of :func:`load_data_dir` (see docs/data.md):

* a Kaldi-style dir: ``wav.scp`` (paths, or shell commands ending in ``|``), ``text``, optional
  ``segments``, ``utt2accent`` or ``utt2subdialect`` (KeSpeech), ``utt2spk``, ``utt2dur``;
* a jsonl manifest: ``data.jsonl`` in a dir, or any ``*.jsonl`` file path, one object per line with
  fields ``utt_id, audio, text, accent, speaker, start, end, duration``;
* a lhotse cuts manifest: ``cuts.jsonl.gz`` in a dir, or a cuts file path. The accent is read from the
  first supervision's ``custom["accent"]`` (fallbacks: ``custom["dialect"]``/``["subdialect"]``,
  the cut's own ``custom``, then ``supervision.language``).

A dir holding several of these is read in the order Kaldi > jsonl > lhotse.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qifusion.errors import DataError
from qifusion.fileio import atomic_write_text

ACCENT_FILES = ("utt2accent", "utt2subdialect")
JSONL_NAME = "data.jsonl"
CUTS_NAME = "cuts.jsonl.gz"


@dataclass
class Utterance:
    """One utterance. ``audio`` is a file path or a Kaldi pipe command ending in ``|``.

    ``start``/``end`` (seconds) select a segment of the audio; ``end=None`` means to the end.
    """

    utt_id: str
    audio: str
    text: str | None = None
    accent: str | None = None
    speaker: str | None = None
    start: float = 0.0
    end: float | None = None
    duration: float | None = None

    @property
    def is_pipe(self) -> bool:
        return self.audio.rstrip().endswith("|")


@dataclass
class LoadReport:
    """What :func:`load_data_dir` left out (``skipped``: reason -> count) and from where."""

    source: str = ""
    kind: str = ""
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.examples.setdefault(reason, example)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        if not self.skipped:
            return f"{self.source}: nothing skipped"
        parts = [f"{n} {r} (e.g. {self.examples[r]})" for r, n in sorted(self.skipped.items())]
        return f"{self.source}: skipped " + "; ".join(parts)


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
def read_kaldi_map(path: Path, *, allow_empty_value: bool = False) -> dict[str, str]:
    """Read a Kaldi ``key value...`` file into a dict (value = rest of the line, stripped).

    Duplicate keys and lines without a value raise DataError naming file and line.
    """
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from e
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        parts = line.split(maxsplit=1)
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        if not value and not allow_empty_value:
            raise DataError(f"{path}:{n}: utterance '{key}' has no value")
        if key in out:
            raise DataError(f"{path}:{n}: duplicate key '{key}'")
        out[key] = value
    return out


def _detect(path: Path) -> tuple[str, Path]:
    if path.is_file():
        name = path.name
        if name.endswith(".jsonl.gz") and ("cuts" in name or _looks_like_cuts(path)):
            return "lhotse", path
        if name.endswith(".jsonl"):
            return "jsonl", path
        raise DataError(f"{path}: unknown manifest type (expected a .jsonl or lhotse cuts*.jsonl.gz file)")
    if not path.is_dir():
        raise DataError(f"data dir {path} does not exist")
    if (path / "wav.scp").is_file():
        return "kaldi", path
    if (path / JSONL_NAME).is_file():
        return "jsonl", path / JSONL_NAME
    if (path / CUTS_NAME).is_file():
        return "lhotse", path / CUTS_NAME
    cuts = sorted(path.glob("*cuts*.jsonl.gz"))
    if cuts:
        return "lhotse", cuts[0]
    raise DataError(
        f"{path}: no wav.scp, {JSONL_NAME} or {CUTS_NAME} found (see docs/data.md for supported layouts)"
    )


def _looks_like_cuts(path: Path) -> bool:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        first = f.readline()
    return '"recording"' in first or '"supervisions"' in first


def load_data_dir(
    path: str | os.PathLike[str],
    *,
    require_text: bool = True,
    strict: bool = True,
    report: LoadReport | None = None,
) -> list[Utterance]:
    """Read utterances from a Kaldi dir, a jsonl manifest or a lhotse cuts manifest (auto-detected).

    ``require_text``: an utterance without a transcript is an error (``strict=True``: DataError naming
    the utterance and file) or is skipped and counted in ``report`` (``strict=False``).
    Without ``require_text`` such utterances are kept with ``text=None`` (e.g. for transcription).
    The order is that of ``wav.scp`` / ``segments`` / the manifest lines.
    """
    path = Path(path)
    kind, src = _detect(path)
    rep = report if report is not None else LoadReport()
    rep.source, rep.kind = str(src), kind
    if kind == "kaldi":
        utts, text_file = _load_kaldi(src), src / "text"
    elif kind == "jsonl":
        utts, text_file = _load_jsonl(src), src
    else:
        from qifusion.data.manifest_lhotse import read_lhotse_cuts

        cuts = read_lhotse_cuts(src)
        utts = [Utterance(**{**f, "audio": resolve_audio(f["audio"], src.parent)}) for f in cuts]
        text_file = src
    out = []
    for u in utts:
        if require_text and (u.text is None or not u.text.strip()):
            what = "no transcript" if u.text is None else "empty transcript"
            if strict:
                raise DataError(f"utterance '{u.utt_id}': {what} in {text_file}")
            rep.skip("missing transcript", u.utt_id)
            continue
        out.append(u)
    if not out and utts:
        raise DataError(f"{src}: all {len(utts)} utterances skipped ({rep.summary()})")
    return out


def _load_kaldi(d: Path) -> list[Utterance]:
    wav = {k: resolve_audio(v, d) for k, v in read_kaldi_map(d / "wav.scp").items()}
    text = read_kaldi_map(d / "text", allow_empty_value=True) if (d / "text").is_file() else {}
    accent: dict[str, str] = {}
    for name in ACCENT_FILES:
        if (d / name).is_file():
            accent = read_kaldi_map(d / name)
            break
    spk = read_kaldi_map(d / "utt2spk") if (d / "utt2spk").is_file() else {}
    dur: dict[str, float] = {}
    if (d / "utt2dur").is_file():
        dur = {k: _float(v, d / "utt2dur", k) for k, v in read_kaldi_map(d / "utt2dur").items()}
    utts: list[Utterance] = []
    if (d / "segments").is_file():
        seg_path = d / "segments"
        for utt, rest in read_kaldi_map(seg_path).items():
            parts = rest.split()
            if len(parts) != 3:
                raise DataError(f"{seg_path}: utterance '{utt}': want 'recording start end', got '{rest}'")
            rec, s, e = parts
            if rec not in wav:
                raise DataError(f"{seg_path}: utterance '{utt}' refers to recording '{rec}' not in wav.scp")
            try:
                start, end = float(s), float(e)
            except ValueError as err:
                raise DataError(f"{seg_path}: utterance '{utt}' has non-numeric times '{rest}'") from err
            if end >= 0 and end <= start:
                raise DataError(f"{seg_path}: utterance '{utt}' has end {end} <= start {start}")
            utts.append(
                Utterance(utt, wav[rec], text.get(utt), accent.get(utt), spk.get(utt), start,
                          None if end < 0 else end, None if end < 0 else round(end - start, 4))
            )
    else:
        for utt, audio in wav.items():
            utts.append(
                Utterance(utt, audio, text.get(utt), accent.get(utt), spk.get(utt), duration=dur.get(utt))
            )
    return utts


def _float(value: str, path: Path, key: str) -> float:
    try:
        return float(value)
    except ValueError as e:
        raise DataError(f"{path}: utterance '{key}' has non-numeric value '{value}'") from e


def _utt_from_dict(obj: dict[str, Any], where: str) -> Utterance:
    for k in ("utt_id", "audio"):
        if not isinstance(obj.get(k), str) or not obj[k]:
            raise DataError(f"{where}: missing or non-string field '{k}'")
    known = {"utt_id", "audio", "text", "accent", "speaker", "start", "end", "duration"}
    kw = {k: v for k, v in obj.items() if k in known}
    kw["start"] = float(kw.get("start") or 0.0)
    for k in ("end", "duration"):
        if kw.get(k) is not None:
            kw[k] = float(kw[k])
    return Utterance(**kw)


def _load_jsonl(path: Path) -> list[Utterance]:
    utts: list[Utterance] = []
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from e
    base = path.parent
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from e
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: expected a JSON object")
        u = _utt_from_dict(obj, f"{path}:{n}")
        if u.utt_id in seen:
            raise DataError(f"{path}:{n}: duplicate utterance '{u.utt_id}'")
        seen.add(u.utt_id)
        u.audio = resolve_audio(u.audio, base)
        utts.append(u)
    return utts


def resolve_audio(audio: str, base: Path) -> str:
    """A relative path that does not exist from the CWD is tried relative to the manifest's dir."""
    if audio.rstrip().endswith("|") or os.path.isabs(audio) or os.path.exists(audio):
        return audio
    cand = base / audio
    return str(cand) if cand.exists() else audio


# ------------------------------------------------------------------------------------------------
# accents
# ------------------------------------------------------------------------------------------------
def load_accents(utts: Iterable[Utterance]) -> list[str]:
    """Sorted list of the distinct accent labels of ``utts`` (utterances without one are ignored)."""
    return sorted({u.accent for u in utts if u.accent})


def accent_index(accents: Sequence[str]) -> dict[str, int]:
    """Map accent name -> id (its index in ``accents``, i.e. the line of ``accents.txt``)."""
    return {a: i for i, a in enumerate(accents)}


def accent_id(utt: Utterance, index: dict[str, int], *, source: str = "") -> int:
    """Accent id of ``utt`` (-1 when it has no label); an unknown label raises DataError."""
    if utt.accent is None:
        return -1
    if utt.accent not in index:
        where = f" in {source}" if source else ""
        raise DataError(
            f"utterance '{utt.utt_id}'{where}: unknown accent '{utt.accent}' "
            f"(known accents: {', '.join(index) or 'none'})"
        )
    return index[utt.accent]


def check_accents(utts: Iterable[Utterance], accents: Sequence[str], *, source: str = "") -> None:
    """Raise DataError on the first utterance whose accent is not in ``accents`` (e.g. a model's list)."""
    idx = accent_index(accents)
    for u in utts:
        accent_id(u, idx, source=source)


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def _check_field(value: str, what: str, utt_id: str) -> None:
    if "\n" in value or "\r" in value:
        raise DataError(f"utterance '{utt_id}': {what} contains a newline")


def write_kaldi_dir(utts: Sequence[Utterance], path: str | os.PathLike[str]) -> None:
    """Write ``wav.scp``, ``text``, ``utt2accent``, ``utt2spk`` (+``segments``, ``utt2dur``), ``data.jsonl``.

    Each file is written atomically; optional files are written only when some utterance has the
    field (``text`` only for utterances with a transcript). Segments are used when any utterance has
    ``start > 0`` or an ``end``; recordings are then keyed by a recording id derived from the audio.
    Lines are sorted by utterance id (Kaldi convention).
    """
    path = Path(path)
    utts = sorted(utts, key=lambda u: u.utt_id)
    ids = [u.utt_id for u in utts]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{path}: duplicate utterance id '{dup}'")
    for u in utts:
        if not u.utt_id or any(c.isspace() for c in u.utt_id):
            raise DataError(f"{path}: utterance id '{u.utt_id}' is empty or contains whitespace")
        _check_field(u.audio, "audio", u.utt_id)
        if u.text is not None:
            _check_field(u.text, "text", u.utt_id)
    segmented = any(u.start > 0 or u.end is not None for u in utts)
    files: dict[str, list[str]] = {"wav.scp": [], "text": [], "utt2accent": [], "utt2spk": [], "utt2dur": []}
    if segmented:
        rec_ids: dict[str, str] = {}
        seg_lines = []
        for u in utts:
            rec = rec_ids.get(u.audio)
            if rec is None:
                rec = _recording_id(u.audio, set(rec_ids.values()))
                rec_ids[u.audio] = rec
            end = -1.0 if u.end is None else u.end
            seg_lines.append(f"{u.utt_id} {rec} {u.start:.3f} {end:.3f}")
        files["wav.scp"] = sorted(f"{rec} {audio}" for audio, rec in rec_ids.items())
        files["segments"] = seg_lines
    else:
        files["wav.scp"] = [f"{u.utt_id} {u.audio}" for u in utts]
    for u in utts:
        if u.text is not None:
            files["text"].append(f"{u.utt_id} {u.text}".rstrip())
        if u.accent:
            _check_field(u.accent, "accent", u.utt_id)
            files["utt2accent"].append(f"{u.utt_id} {u.accent}")
        if u.speaker:
            files["utt2spk"].append(f"{u.utt_id} {u.speaker}")
        if u.duration is not None:
            files["utt2dur"].append(f"{u.utt_id} {u.duration:.3f}")
    path.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        if lines or name == "wav.scp":
            atomic_write_text(path / name, "".join(line + "\n" for line in lines))
        elif (path / name).exists():
            (path / name).unlink()  # stale file from an earlier write would mislabel utterances
    jsonl = "".join(json.dumps(dict(vars(u)), ensure_ascii=False) + "\n" for u in utts)
    atomic_write_text(path / JSONL_NAME, jsonl)


def _recording_id(audio: str, taken: set[str]) -> str:
    if audio.rstrip().endswith("|"):
        base = "rec"
    else:
        base = Path(audio).stem.replace(" ", "_") or "rec"
    rec, n = base, 1
    while rec in taken:
        n += 1
        rec = f"{base}-{n}"
    return rec
