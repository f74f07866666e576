"""Shared bookkeeping of corpus preparation: skip counters and the per-split output."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from qifusion.data.audio import audio_info
from qifusion.data.manifest import Utterance, load_accents, write_kaldi_dir
from qifusion.errors import DataError
from qifusion.fileio import atomic_write_text

SPLITS = ("train", "dev", "test")


@dataclass
class PrepareReport:
    """Counts of a preparation run: kept utterances per split and skipped items per reason."""

    corpus: str
    kept: dict[str, int] = field(default_factory=dict)
    hours: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    accents: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.examples.setdefault(reason, example)

    def summary(self) -> str:
        lines = [f"{self.corpus}: " + ", ".join(
            f"{s} {self.kept.get(s, 0)} utts ({self.hours.get(s, 0.0):.2f} h)" for s in SPLITS)]
        for reason, n in sorted(self.skipped.items()):
            lines.append(f"  skipped {n} x {reason} (e.g. {self.examples[reason]})")
        return "\n".join(lines)


def audio_duration(path: Path, utt_id: str, report: PrepareReport, cache: dict[str, float]) -> float | None:
    """Duration of ``path`` from its header (cached); None (counted) when missing or unreadable."""
    key = str(path)
    if key in cache:
        return cache[key]
    if not path.is_file():
        report.skip("missing audio file", f"{utt_id}: {path}")
        cache[key] = -1.0
        return None
    try:
        _, dur = audio_info(key, utt_id=utt_id)
    except DataError as e:
        report.skip("unreadable audio", str(e))
        cache[key] = -1.0
        return None
    cache[key] = dur
    return dur if dur > 0 else None


def write_splits(splits: dict[str, list[Utterance]], out_dir: Path, report: PrepareReport) -> None:
    """Write one Kaldi dir per split, ``accents.txt`` (all splits) and ``prepare_report.json``."""
    for name in SPLITS:
        utts = splits.get(name, [])
        if not utts:
            raise DataError(f"{report.corpus}: split '{name}' is empty after preparation\n{report.summary()}")
        write_kaldi_dir(utts, out_dir / name)
        report.kept[name] = len(utts)
        report.hours[name] = round(sum(u.duration or 0.0 for u in utts) / 3600, 4)
        report.accents[name] = load_accents(utts)
    all_accents = sorted({a for v in report.accents.values() for a in v})
    atomic_write_text(out_dir / "accents.txt", "".join(a + "\n" for a in all_accents))
    blob = json.dumps(report.__dict__, indent=2, ensure_ascii=False)
    atomic_write_text(out_dir / "prepare_report.json", blob)
    print(report.summary(), file=sys.stderr)
