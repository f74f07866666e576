"""``qifusion synth``: the embedded multi-accent English corpus (espeak-ng dialects; the ``accents``
corpus of L2 and native voices, :mod:`.synth_accents`).

Pipeline: :func:`plan_corpus` (pure, deterministic for a seed: text, speaker, pitch and rate of every
utterance) -> :func:`render_utterance` per item (``espeak-ng --stdout | sox`` to 16 kHz mono int16 with
peak normalisation to -1 dBFS, no dither; written to a temp name, checked, renamed) -> Kaldi dirs +
lhotse ``cuts.jsonl.gz`` per split from the items that exist on disk.

Workers are threads: each item's time is spent in the ``espeak-ng`` and ``sox`` child processes, so
threads run them in parallel (one per core) without forking a Python process that may hold torch.
Re-running into the same dir skips finished wavs (resume); ``synth_plan.json`` records the settings so
a re-run with other settings is refused instead of mixing two corpora. An item that fails is retried
once, then left out and listed in the summary (and ``synth_summary.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from qifusion.data.manifest import CUTS_NAME, Utterance, write_kaldi_dir
from qifusion.data.manifest_lhotse import write_lhotse_cuts
from qifusion.data.synth_accents import (
    engine_wav,
    preset_licences,
    preset_sources,
    transform_effects,
    write_speakers,
)
from qifusion.data.synth_heldout import plan_heldout
from qifusion.data.synth_plan import PRESETS, SPLITS, SynthItem, plan_splits, resolve_accents
from qifusion.data.voices import (
    l2_speaker_disjoint,
)
from qifusion.data.voices_accents import (
    DERIVED_EN_VOICES,
    espeak_en_data_dir,
    require_voices,
)
from qifusion.errors import DataError, UserError
from qifusion.fileio import atomic_write_text

SAMPLE_RATE = 16000
MIN_SECONDS_PER_WORD, MAX_SECONDS = 0.1, 30.0
PLAN_NAME, SUMMARY_NAME = "synth_plan.json", "synth_summary.json"
TEXT_VERSION = 2  # 2: the demo's reserved sentences (synth_text.demo_reserved) are never used elsewhere


@dataclass
class SynthSummary:
    """Result of :func:`synthesize_corpus`; ``ok`` is False when any item failed."""

    ok: bool
    out_dir: str
    preset: str
    seed: int
    counts: dict[str, dict[str, int]]  # split -> accent -> utterances written
    hours: dict[str, float]  # split -> hours of audio
    failed: list[tuple[str, str]] = field(default_factory=list)  # (utt_id, reason)
    generated: int = 0  # made by this run
    resumed: int = 0  # found finished on disk
    elapsed_s: float = 0.0
    speaker_disjoint: bool = True
    licences: dict[str, str] = field(default_factory=dict)  # source -> licence (accents presets)

    @property
    def total_hours(self) -> float:
        return sum(self.hours.values())

    def describe(self) -> str:
        lines = [f"qifusion synth: {self.out_dir} (preset {self.preset}, seed {self.seed})"]
        for split in (s for s in SPLITS if s in self.counts):
            c = self.counts[split]
            lines.append(f"  {split:5s} {sum(c.values()):6d} utts {self.hours.get(split, 0.0):6.2f} h  "
                         + " ".join(f"{a}={n}" for a, n in sorted(c.items())))
        lines.append(f"  made {self.generated}, resumed {self.resumed}, failed {len(self.failed)} "
                     f"in {self.elapsed_s:.1f} s")
        lines += [f"  FAILED {u}: {r}" for u, r in self.failed[:20]]
        if not self.speaker_disjoint:
            lines.append("  note: some accents have too few voices for speaker-disjoint splits")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# planning: train/dev/test presets (.synth_plan) or the held-back test set (.synth_heldout)
# --------------------------------------------------------------------------------------------
def plan_corpus(*, preset: str, utts_per_accent: int | None, seed: int,
                accents: list[str] | None) -> list[SynthItem]:
    """Every utterance of the corpus (same arguments -> same list, on any machine with the same text
    packages). Each sentence is used once, so sentences are disjoint across splits."""
    if preset in PRESETS and PRESETS[preset].test_only:
        p = PRESETS[preset]
        return plan_heldout(preset=p, accents=resolve_accents(p, accents),
                            utts_per_accent=utts_per_accent or p.utts_per_accent, seed=seed)
    return plan_splits(preset=preset, utts_per_accent=utts_per_accent, seed=seed, accents=accents)



# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
def render_utterance(item: SynthItem, path: Path) -> float:
    """Synthesise ``item`` to ``path`` (16 kHz mono int16 wav, atomically); return its duration (s).

    Raises DataError naming the utterance when espeak-ng/sox fail or the output looks wrong.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    if item.engine == "espeak":
        extra = [f"--path={espeak_en_data_dir()}"] if item.voice in DERIVED_EN_VOICES else []
        espeak = ["espeak-ng", *extra, "-v", item.voice, "-p", str(item.pitch), "-s", str(item.rate),
                  "--stdout", item.text]
        r = subprocess.run(espeak, capture_output=True, check=False, timeout=120)
        if r.returncode != 0 or len(r.stdout) < 1000:
            raise DataError(f"utterance '{item.utt_id}': espeak-ng failed (rc {r.returncode}): "
                            f"{r.stderr.decode(errors='replace').strip()[:200]}")
        raw = r.stdout
    else:
        raw = engine_wav(item, path.parent / f".{path.name}.{os.getpid()}.raw.wav")
    # explicit effect order: speaker transform, resample, then normalise (sox's implicit rate would run
    # after the gain and its ringing could clip); -D: no dither, so the output is deterministic
    sox = ["sox", "-D", "-V1", "-t", "wav", "-", "-b", "16", "-e", "signed-integer", "-t", "wav", str(tmp),
           *transform_effects(item.warp, item.tempo), "rate", "-h", str(SAMPLE_RATE), "channels", "1",
           "gain", "-n", "-1"]
    try:
        s = subprocess.run(sox, input=raw, capture_output=True, check=False, timeout=120)
        if s.returncode != 0:
            raise DataError(f"utterance '{item.utt_id}': sox failed (rc {s.returncode}): "
                            f"{s.stderr.decode(errors='replace').strip()[:200]}")
        duration = check_wav(tmp, item)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return duration


def check_wav(path: Path, item: SynthItem) -> float:
    """Readable, 16 kHz mono int16, non-silent, not clipped, sane duration; return duration (s)."""
    try:
        info = sf.info(str(path))
        data, sr = sf.read(str(path), dtype="int16")
    except (RuntimeError, sf.LibsndfileError) as e:
        raise DataError(f"utterance '{item.utt_id}': unreadable output {path}: {e}") from e
    if sr != SAMPLE_RATE or info.channels != 1 or info.subtype != "PCM_16":
        raise DataError(f"utterance '{item.utt_id}': {path} is {sr} Hz, {info.channels} ch, {info.subtype}")
    duration = len(data) / sr
    min_dur = MIN_SECONDS_PER_WORD * len(item.text.split())
    if not (min_dur <= duration <= MAX_SECONDS):
        raise DataError(f"utterance '{item.utt_id}': duration {duration:.2f} s outside [{min_dur:.1f}, "
                        f"{MAX_SECONDS}] for {len(item.text.split())} words")
    peak = int(np.abs(data.astype(np.int32)).max())
    if peak < 3000 or peak >= 32767:
        raise DataError(f"utterance '{item.utt_id}': peak {peak} (silent or clipped output)")
    return duration


def _render_with_retry(item: SynthItem, path: Path) -> tuple[float | None, str]:
    reason = ""
    for _ in range(2):  # one retry
        try:
            return render_utterance(item, path), ""
        except (DataError, OSError, subprocess.SubprocessError) as e:
            reason = str(e)
    return None, reason


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------
def synthesize_corpus(*, out_dir: Path, preset: str, utts_per_accent: int | None, seed: int,
                      jobs: int | None, accents: list[str] | None, progress: bool = True) -> SynthSummary:
    """Make (or finish) the corpus in ``out_dir``: ``{train,dev,test}/`` Kaldi dirs (``wav.scp``,
    ``text``, ``utt2accent``, ``utt2spk``, ``utt2dur``, ``data.jsonl``) + ``cuts.jsonl.gz`` each (only
    ``test/`` for a test-only preset), wavs under ``wav/``. See docs/synth.md."""
    t0 = time.time()
    out_dir = Path(out_dir).absolute()
    if shutil.which("sox") is None:
        raise UserError("sox is not installed: run 'sudo apt-get install sox' or 'make setup'")
    items = plan_corpus(preset=preset, utts_per_accent=utts_per_accent, seed=seed, accents=accents)
    settings = {"preset": preset, "utts_per_accent": utts_per_accent or PRESETS[preset].utts_per_accent,
                "seed": seed, "accents": sorted({i.accent for i in items}), "utterances": len(items),
                "texts": TEXT_VERSION}
    p = PRESETS[preset]
    if p.engine == "accents":  # the licence gate: before anything is written
        settings["test_twins"] = True  # train-voice twins of held-out test sentences (synth_plan._twins)
        require_voices(preset_sources(p, settings["accents"]), preset=preset)
    _check_plan(out_dir, settings)
    if p.engine == "accents":
        write_speakers(out_dir, p, settings["accents"])
    durations: dict[str, float] = {}
    todo = []
    for it in items:
        path = out_dir / it.wav
        if path.is_file():
            durations[it.utt_id] = sf.info(str(path)).frames / SAMPLE_RATE
        else:
            todo.append(it)
    resumed = len(durations)
    failed: list[tuple[str, str]] = []
    _run_parallel(todo, out_dir, jobs=jobs, durations=durations, failed=failed, progress=progress)
    done = [it for it in items if it.utt_id in durations]
    splits = [s for s in SPLITS if any(it.split == s for it in items)]  # the planned splits
    counts: dict[str, dict[str, int]] = {s: {} for s in splits}
    hours: dict[str, float] = {}
    for split in splits:
        part = [it for it in done if it.split == split]
        for it in part:
            counts[split][it.accent] = counts[split].get(it.accent, 0) + 1
        hours[split] = sum(durations[it.utt_id] for it in part) / 3600
        write_split(out_dir / split, part, durations)
    names = settings["accents"]
    disjoint = p.engine != "mbrola" or all(l2_speaker_disjoint(a) for a in names)
    summary = SynthSummary(ok=not failed, out_dir=str(out_dir), preset=preset, seed=seed, counts=counts,
                           hours=hours, failed=sorted(failed), generated=len(done) - resumed, resumed=resumed,
                           elapsed_s=round(time.time() - t0, 2), speaker_disjoint=disjoint,
                           licences=preset_licences(p, names) if p.engine == "accents" else {})
    atomic_write_text(out_dir / SUMMARY_NAME, json.dumps(asdict(summary), indent=1) + "\n")
    if progress:
        print(summary.describe(), file=sys.stderr)
    return summary


def _check_plan(out_dir: Path, settings: dict) -> None:
    path = out_dir / PLAN_NAME
    if path.is_file():
        old = json.loads(path.read_text())
        if old != settings and "texts" not in old:
            raise UserError(f"{out_dir} was made before the demo's sentences were reserved (issue 16; "
                            f"{path} has no 'texts' key): delete it and re-run to make it again")
        if old != settings and _adds_twins(old, settings):  # made before the twins: it gains just those
            atomic_write_text(path, json.dumps(settings, indent=1) + "\n")
            return
        if old != settings:
            raise UserError(f"{out_dir} holds a corpus made with other settings ({path}: {old}); "
                            f"use another --out or delete it")
    else:
        atomic_write_text(path, json.dumps(settings, indent=1) + "\n")


def _adds_twins(old: dict, new: dict) -> bool:
    """Whether ``new`` settings are ``old``'s plus the test twins (the only other change: the count)."""
    rest = {k: v for k, v in new.items() if k not in ("test_twins", "utterances")}
    return new.get("test_twins") is True and "test_twins" not in old and rest == {
        k: v for k, v in old.items() if k != "utterances"}


def _run_parallel(todo: list[SynthItem], out_dir: Path, *, jobs: int | None, durations: dict[str, float],
                  failed: list[tuple[str, str]], progress: bool) -> None:
    if not todo:
        return
    from tqdm import tqdm

    workers = max(1, jobs or os.cpu_count() or 1)
    bar = tqdm(total=len(todo), desc="synth", unit="utt", disable=not progress, file=sys.stderr)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {pool.submit(_render_with_retry, it, out_dir / it.wav): it for it in todo}
        for fut in as_completed(futures):
            it = futures[fut]
            dur, reason = fut.result()
            if dur is None:
                failed.append((it.utt_id, reason))
            else:
                durations[it.utt_id] = dur
            bar.update(1)
    finally:  # on Ctrl-C: drop queued items (finished wavs stay; a re-run resumes)
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def write_split(split_dir: Path, items: list[SynthItem], durations: dict[str, float]) -> None:
    """Kaldi files (via :func:`write_kaldi_dir`) and a lhotse ``cuts.jsonl.gz`` for one split; the
    accent goes to ``utt2accent`` and the supervision's ``custom["accent"]``."""
    root = split_dir.parent
    utts = [Utterance(it.utt_id, str(root / it.wav), it.text, it.accent, it.speaker,
                      duration=round(durations[it.utt_id], 4)) for it in items]
    write_kaldi_dir(utts, split_dir)
    write_lhotse_cuts(utts, split_dir / CUTS_NAME, sample_rate=SAMPLE_RATE,
                      num_samples={u: round(d * SAMPLE_RATE) for u, d in durations.items()})
