"""lhotse cuts manifests -> utterance fields (``load_data_dir`` makes the
:class:`~qifusion.data.manifest.Utterance` objects and resolves the audio paths).

The accent is read from the first supervision's ``custom["accent"]`` (as ``qifusion synth`` writes
it); fallbacks: ``custom["dialect"]``/``["subdialect"]``, the cut's own ``custom``, then the
supervision's ``language``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qifusion.errors import DataError
from qifusion.fileio import atomic_write_bytes

if TYPE_CHECKING:  # manifest imports this module
    from qifusion.data.manifest import Utterance


def read_lhotse_cuts(path: Path) -> list[dict[str, Any]]:
    """:class:`~qifusion.data.manifest.Utterance` fields of each cut of a lhotse cuts manifest (segment =
    the cut's span of its recording; ``audio`` as written in the manifest, or a pipe command)."""
    try:
        from lhotse import CutSet
    except ImportError as e:  # pragma: no cover - lhotse is a dependency
        raise DataError(f"{path}: reading lhotse manifests needs the 'lhotse' package") from e
    try:
        cuts = CutSet.from_file(path)
    except Exception as e:  # lhotse raises many types on malformed files
        raise DataError(f"{path}: cannot read lhotse cuts manifest: {e}") from e
    utts: list[dict[str, Any]] = []
    for cut in cuts:
        rec = cut.recording
        if rec is None or not rec.sources:
            raise DataError(f"{path}: cut '{cut.id}' has no recording")
        if len(rec.sources) > 1 and rec.sources[0].type == "file":
            raise DataError(f"{path}: cut '{cut.id}': multi-source recordings are not supported")
        src = rec.sources[0]
        if src.type == "command":
            audio = src.source.rstrip() + " |"
        elif src.type == "file":
            audio = str(src.source)
        else:
            raise DataError(f"{path}: cut '{cut.id}': audio source type '{src.type}' not supported")
        sup = cut.supervisions[0] if cut.supervisions else None
        text = (" ".join(s.text for s in cut.supervisions if s.text) or None) if cut.supervisions else None
        accent = lhotse_accent(cut, sup)
        speaker = sup.speaker if sup is not None else None
        start = float(cut.start)
        end = start + float(cut.duration)
        full = abs(start) < 1e-6 and abs(float(cut.duration) - float(rec.duration)) < 1e-3
        utts.append({"utt_id": cut.id, "audio": audio, "text": text, "accent": accent, "speaker": speaker,
                     "start": start, "end": None if full else round(end, 4),
                     "duration": round(float(cut.duration), 4)})
    return utts


def lhotse_accent(cut: Any, sup: Any) -> str | None:
    """Accent label: supervision/cut ``custom`` field accent|dialect|subdialect, else ``language``."""
    for obj in (sup, cut):
        custom = getattr(obj, "custom", None) or {}
        for k in ("accent", "dialect", "subdialect"):
            if custom.get(k):
                return str(custom[k])
    if sup is not None and getattr(sup, "language", None):
        return str(sup.language)
    return None


def write_lhotse_cuts(utts: Sequence[Utterance], path: Path, *, sample_rate: int,
                      num_samples: Mapping[str, int]) -> None:
    """Write ``utts`` (whole-file recordings of ``sample_rate`` Hz, ``num_samples[utt_id]`` long) as a
    gzipped lhotse cuts manifest, one ``MonoCut`` per utterance sorted by id; the accent goes to the
    supervision's ``custom["accent"]``. Byte-identical for the same input (gzip mtime 0); atomic."""
    from lhotse import AudioSource, MonoCut, Recording, SupervisionSegment

    lines = []
    for u in sorted(utts, key=lambda u: u.utt_id):
        n = num_samples[u.utt_id]
        rec = Recording(id=u.utt_id, sources=[AudioSource(type="file", channels=[0], source=u.audio)],
                        sampling_rate=sample_rate, num_samples=n, duration=n / sample_rate)
        sup = SupervisionSegment(id=u.utt_id, recording_id=u.utt_id, start=0.0, duration=rec.duration,
                                 channel=0, text=u.text, speaker=u.speaker, language="English",
                                 custom={"accent": u.accent})
        cut = MonoCut(id=u.utt_id, start=0.0, duration=rec.duration, channel=0, recording=rec,
                      supervisions=[sup])
        lines.append(json.dumps(cut.to_dict(), ensure_ascii=False))
    data = "".join(line + "\n" for line in lines).encode()
    atomic_write_bytes(path, gzip.compress(data, mtime=0))
