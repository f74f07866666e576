"""KeSpeech (Tang et al., NeurIPS 2021 datasets track) -> qifusion train/dev/test Kaldi dirs.

Input layout (as distributed)::

    SRC/Tasks/ASR/<part>/{wav.scp, text, utt2subdialect, utt2spk}
    SRC/Audio/...                      # wav.scp paths are relative to SRC

Parts ``train_phase1``/``train_phase2`` are merged into ``train``, ``dev_phase1``/``dev_phase2`` into
``dev``; ``test`` stays ``test``. Accent = ``utt2subdialect`` (9 classes: Mandarin and the 8
subdialects below), names normalised to :data:`SUBDIALECTS`. Text goes through
:func:`~qifusion.data.prepare.text.normalize_mandarin`. Utterances with a missing/unreadable audio
file, no or empty transcript, or an unknown subdialect are skipped and counted.
"""

from __future__ import annotations

import os
from pathlib import Path

from qifusion.data.manifest import Utterance, read_kaldi_map
from qifusion.data.prepare.common import PrepareReport, audio_duration, write_splits
from qifusion.data.prepare.text import normalize_mandarin
from qifusion.errors import DataError

SUBDIALECTS = (
    "Mandarin", "Beijing", "Ji-Lu", "Jiang-Huai", "Jiao-Liao", "Lan-Yin", "Northeastern", "Southwestern",
    "Zhongyuan",
)
_CANON = {s.lower().replace("-", "").replace("_", "").replace(" ", ""): s for s in SUBDIALECTS}


def canonical_subdialect(label: str) -> str | None:
    """``ji_lu``/``Ji-Lu``/``JiLu`` -> ``Ji-Lu``; None when not one of the 9 classes."""
    return _CANON.get(label.lower().replace("-", "").replace("_", "").replace(" ", ""))


def part_split(part: str) -> str | None:
    """``train_phase1`` -> ``train``, ``dev_phase2`` -> ``dev``, ``test`` -> ``test``; else None."""
    for split in ("train", "dev", "test"):
        if part == split or part.startswith(split + "_"):
            return split
    return None


def prepare_kespeech(src: Path, out_dir: Path, *, check_audio: bool = True) -> PrepareReport:
    """Prepare KeSpeech at ``src`` into ``out_dir/{train,dev,test}``; returns the counts.

    ``check_audio``: read each file's header (duration for ``utt2dur``, catches missing/corrupt files).
    """
    asr = src / "Tasks" / "ASR"
    if not asr.is_dir():
        raise DataError(f"{src}: not a KeSpeech root (no Tasks/ASR; expected SRC/Tasks/ASR/<part>/wav.scp)")
    report = PrepareReport(corpus="kespeech")
    splits: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    parts = sorted(p for p in asr.iterdir() if (p / "wav.scp").is_file())
    if not parts:
        raise DataError(f"{asr}: no <part>/wav.scp found")
    seen: set[str] = set()
    cache: dict[str, float] = {}
    for part in parts:
        split = part_split(part.name)
        if split is None:
            report.skip("unknown part (not train*/dev*/test)", str(part))
            continue
        wav = read_kaldi_map(part / "wav.scp")
        text = read_kaldi_map(part / "text", allow_empty_value=True) if (part / "text").is_file() else {}
        if not (part / "utt2subdialect").is_file():
            raise DataError(f"{part}: missing utt2subdialect (needed for accent labels)")
        sub = read_kaldi_map(part / "utt2subdialect")
        spk = read_kaldi_map(part / "utt2spk") if (part / "utt2spk").is_file() else {}
        for utt, rel in wav.items():
            where = f"{utt} ({part.name})"
            if utt in seen:
                report.skip("duplicate utterance id across parts", where)
                continue
            if utt not in text:
                report.skip("no transcript", f"{where}: not in {part / 'text'}")
                continue
            clean = normalize_mandarin(text[utt])
            if not clean:
                report.skip("empty transcript after normalisation", where)
                continue
            accent = canonical_subdialect(sub.get(utt, ""))
            if accent is None:
                report.skip("missing or unknown subdialect", f"{where}: '{sub.get(utt, '')}'")
                continue
            audio = rel if rel.rstrip().endswith("|") or os.path.isabs(rel) else str((src / rel).resolve())
            dur = None
            if check_audio and not audio.rstrip().endswith("|"):
                dur = audio_duration(Path(audio), utt, report, cache)
                if dur is None:
                    continue
            seen.add(utt)
            splits[split].append(Utterance(utt, audio, clean, accent, spk.get(utt), duration=dur))
    write_splits(splits, out_dir, report)
    return report
