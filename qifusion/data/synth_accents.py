"""Rendering and bookkeeping for the ``accents`` / ``accents-free`` presets of ``qifusion synth``.

Voices and speakers are in :mod:`.voices_accents`; planning is the shared :func:`.synth_plan.plan_splits`.
Here: the flite/festival engines (MBROLA voices go through espeak-ng like the espeak presets), the sox
effects of a derived speaker's transform, ``speakers.json`` (every speaker's accent, source voice,
transform, split and whether its source voice is unseen in train) and the licences of a corpus.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from qifusion.data.voices_accents import (
    LICENCES,
    SourceVoice,
    accent_speakers,
    seen_source_test_speakers,
    unseen_source,
)
from qifusion.errors import DataError
from qifusion.fileio import atomic_write_text

SPEAKERS_NAME = "speakers.json"


def transform_effects(warp: float, tempo: float) -> list[str]:
    """sox effects for a speaker transform: ``speed warp`` scales the spectrum (formants and f0) and
    shortens by ``warp``; ``tempo`` (WSOLA, pitch kept) then sets the final rate to ``tempo`` x the
    source's. Identity -> no effects (the espeak presets' audio stays byte-identical)."""
    effects: list[str] = []
    if warp != 1.0:
        effects += ["speed", f"{warp:.4f}"]
    if round(tempo / warp, 4) != 1.0:
        effects += ["tempo", "-s", f"{tempo / warp:.4f}"]
    return effects


def engine_wav(item: Any, tmp: Path) -> bytes:
    """Raw wav bytes of ``item.text`` in voice ``item.voice`` of ``item.engine`` (``flite``/``festival``),
    via the temp file ``tmp`` (removed). Raises DataError naming the utterance on failure."""
    if item.engine == "flite":
        cmd, stdin = ["flite", "-voice", item.voice, "-t", item.text, "-o", str(tmp)], None
    elif item.engine == "festival":
        cmd, stdin = ["text2wave", "-eval", f"(voice_{item.voice})", "-o", str(tmp)], item.text + "\n"
    else:
        raise DataError(f"utterance '{item.utt_id}': unknown engine '{item.engine}'")
    try:
        r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False, timeout=120)
        if r.returncode != 0 or not tmp.is_file() or tmp.stat().st_size < 1000:
            raise DataError(f"utterance '{item.utt_id}': {item.engine} failed (rc {r.returncode}): "
                            f"{r.stderr.strip()[:200]}")
        return tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)


def preset_sources(preset: Any, accents: list[str]) -> set[SourceVoice]:
    """Every source voice the preset's ``accents`` use (for the licence gate)."""
    spk = accent_speakers(accents, free_only=preset.free_only)
    return {s.source for part in spk.values() for s in part}


def preset_licences(preset: Any, accents: list[str]) -> dict[str, str]:
    """Licence of every synthesiser the corpus uses, and of its text."""
    engines = sorted({v.engine for v in preset_sources(preset, accents)})
    return {e: LICENCES[e] for e in [*engines, "text"]}


def speaker_table(preset: Any, accents: list[str]) -> list[dict[str, Any]]:
    """One row per speaker: id, accent, split, engine, voice, gender, warp, tempo, unseen_source."""
    spk = accent_speakers(accents, free_only=preset.free_only)
    spk["test"] = spk["test"] + seen_source_test_speakers(accents, free_only=preset.free_only)
    rows = []
    for split in ("train", "dev", "test"):
        for s in spk[split]:
            rows.append({"speaker": s.speaker_id, "accent": s.accent, "split": split, "source": s.source.key,
                         **{k: v for k, v in asdict(s.source).items() if k != "name"}, "voice": s.source.name,
                         "warp": s.warp, "tempo": s.tempo,
                         "unseen_source": split != "train" and unseen_source(s, spk["train"])})
    return rows


def write_speakers(out_dir: Path, preset: Any, accents: list[str]) -> None:
    """Write ``speakers.json`` (see :func:`speaker_table`) into the corpus dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / SPEAKERS_NAME, json.dumps(speaker_table(preset, accents), indent=1) + "\n")


def load_speakers(corpus_dir: Path) -> dict[str, dict[str, Any]]:
    """speaker id -> row of ``speakers.json`` ({} when the corpus has none, e.g. an espeak preset)."""
    path = Path(corpus_dir) / SPEAKERS_NAME
    if not path.is_file():
        return {}
    try:
        return {r["speaker"]: r for r in json.loads(path.read_text())}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not a valid speakers table ({e})") from e


def corpus_licences(data_dir: Path) -> dict[str, str]:
    """The ``licences`` of the synth corpus holding ``data_dir`` (the dir itself or its parent, as
    written to ``synth_summary.json``); {} for other corpora. For model cards."""
    for d in (Path(data_dir), Path(data_dir).parent):
        path = d / "synth_summary.json"
        if path.is_file():
            try:
                return dict(json.loads(path.read_text()).get("licences") or {})
            except (json.JSONDecodeError, TypeError, ValueError) as e:
                raise DataError(f"{path} is not valid JSON ({e})") from e
    return {}
