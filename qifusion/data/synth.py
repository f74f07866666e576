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
import random
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
from qifusion.data.synth_text import corpus_pool, demo_pool
from qifusion.data.voices import (
    ESPEAK_ACCENTS,
    L2_VOICES,
    Speaker,
    espeak_speakers,
    l2_speaker_disjoint,
    l2_speakers,
)
from qifusion.data.voices_accents import (
    ACCENT_VOICES,
    DERIVED_EN_VOICES,
    FREE_ACCENTS,
    AccentSpeaker,
    accent_speakers,
    espeak_en_data_dir,
    require_voices,
)
from qifusion.errors import DataError, UserError
from qifusion.fileio import atomic_write_text

SPLITS = ("train", "dev", "test")
SAMPLE_RATE = 16000
PITCH_RANGE = (30, 70)  # espeak -p (0..99, default 50), drawn per utterance
RATE_RANGE = (145, 200)  # espeak -s words per minute (default 175), drawn per utterance
MIN_SECONDS_PER_WORD, MAX_SECONDS = 0.1, 30.0
PLAN_NAME, SUMMARY_NAME = "synth_plan.json", "synth_summary.json"
# espeak-ng -s for MBROLA voices: 145 wpm gives 0.34 s/word (accents train split), near flite and
# festival's 0.36 (espeak's default 175 gave 0.27), so speaking rate does not tell the synthesiser apart
MBROLA_RATE = 145
TEXT_VERSION = 2  # 2: the demo's reserved sentences (synth_text.demo_reserved) are never used elsewhere


@dataclass(frozen=True)
class Preset:
    """What a preset makes. ``eval_frac``: dev (and test) share of each accent's total;
    ``majority``: this accent's train part is made ``majority_share`` of all train (KeSpeech-like);
    ``test_only``: a held-back evaluation set, only a test split (planned in :mod:`.synth_heldout`)."""

    name: str
    engine: str  # "espeak", "mbrola" or "accents" (source voices of several synthesisers, .voices_accents)
    accents: tuple[str, ...]
    utts_per_accent: int
    eval_frac: float = 0.1
    max_words: int = 20
    majority: str | None = None
    majority_share: float = 0.4
    test_only: bool = False
    free_only: bool = False  # "accents" engine: only the free source voices


PRESETS = {
    "demo": Preset("demo", "espeak", ESPEAK_ACCENTS, 100, max_words=12),
    "benchmark": Preset("benchmark", "espeak", ESPEAK_ACCENTS, 800, eval_frac=0.15, majority="en-us"),
    "l2": Preset("l2", "mbrola", tuple(L2_VOICES), 100),
    "heldout": Preset("heldout", "espeak", ESPEAK_ACCENTS, 40, test_only=True),
    "accents": Preset("accents", "accents", tuple(ACCENT_VOICES), 720, eval_frac=0.15, majority="us"),
    "accents-free": Preset("accents-free", "accents", FREE_ACCENTS, 720, eval_frac=0.15, majority="us",
                           free_only=True),
}


@dataclass(frozen=True)
class SynthItem:
    """One utterance to make. ``wav`` is relative to the output dir."""

    utt_id: str
    split: str
    accent: str
    speaker: str
    voice: str
    text: str
    pitch: int
    rate: int
    wav: str
    engine: str = "espeak"  # "espeak" (also MBROLA voices, via espeak-ng), "flite" or "festival"
    warp: float = 1.0  # sox speed: spectrum (formants and f0) scaled by warp
    tempo: float = 1.0  # speaking rate factor after the warp (sox tempo)


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
# planning
# --------------------------------------------------------------------------------------------
def split_sizes(total: int, *, eval_frac: float) -> dict[str, int]:
    """Per-split counts for ``total`` utterances of one accent; dev = test = round(total * eval_frac) >= 1."""
    if total < 3:
        raise UserError(f"--utts-per-accent must be at least 3 (one per split), got {total}")
    n_eval = max(1, round(total * eval_frac))
    return {"train": total - 2 * n_eval, "dev": n_eval, "test": n_eval}


def resolve_accents(preset: Preset, accents: list[str] | None) -> list[str]:
    """The preset's accents, or the requested subset (order of the preset); unknown names: UserError."""
    if not accents:
        return list(preset.accents)
    unknown = [a for a in accents if a not in preset.accents]
    if unknown:
        raise UserError(f"unknown accent(s) {', '.join(unknown)} for preset '{preset.name}' "
                        f"(valid: {', '.join(preset.accents)})")
    return [a for a in preset.accents if a in set(accents)]


def plan_corpus(*, preset: str, utts_per_accent: int | None, seed: int,
                accents: list[str] | None) -> list[SynthItem]:
    """Every utterance of the corpus (same arguments -> same list, on any machine with the same text
    packages). Each sentence is used once, so sentences are disjoint across splits."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset '{preset}' (valid: {', '.join(PRESETS)})")
    p = PRESETS[preset]
    names = resolve_accents(p, accents)
    if p.test_only:
        from qifusion.data.synth_heldout import plan_heldout  # imports this module

        return plan_heldout(preset=p, accents=names, utts_per_accent=utts_per_accent or p.utts_per_accent,
                            seed=seed)
    sizes = split_sizes(utts_per_accent or p.utts_per_accent, eval_frac=p.eval_frac)
    counts = {a: dict(sizes) for a in names}
    if p.majority in names and len(names) > 1:  # majority train part = majority_share of all train
        minority_train = sizes["train"] * (len(names) - 1)
        counts[p.majority]["train"] = round(p.majority_share / (1 - p.majority_share) * minority_train)
    speakers = preset_speakers(p, names)
    rng = random.Random(f"qifusion-synth:{preset}:{seed}")
    pool = (demo_pool if preset == "demo" else corpus_pool)(max_words=p.max_words)
    need = sum(sum(c.values()) for c in counts.values())
    if need > len(pool):
        raise UserError(f"preset '{preset}' needs {need} distinct sentences but the text packages give "
                        f"{len(pool)}: lower --utts-per-accent")
    rng.shuffle(pool)
    items: list[SynthItem] = []
    for split in SPLITS:
        for accent in names:
            spk = [s for s in speakers[split] if s.accent == accent]
            for i in range(counts[accent][split]):
                if i % len(spk) == 0:
                    order = rng.sample(spk, len(spk))  # balanced: every speaker once per round
                items.append(_item(split, accent, order[i % len(spk)], pool[len(items)], rng, len(items)))
    return items


def preset_speakers(p: Preset, names: list[str]) -> dict[str, list]:
    """Split -> speakers (:class:`Speaker` or :class:`AccentSpeaker`) of preset ``p``'s ``names``."""
    if p.engine == "accents":
        return accent_speakers(names, free_only=p.free_only)
    return espeak_speakers(names) if p.engine == "espeak" else l2_speakers(names)


def _item(split: str, accent: str, spk: Speaker | AccentSpeaker, text: str, rng: random.Random,
          n: int) -> SynthItem:
    utt_id = f"{spk.speaker_id}-{n:06d}"
    wav = f"wav/{split}/{accent}/{utt_id}.wav"
    if isinstance(spk, AccentSpeaker):  # MBROLA via espeak-ng: default pitch, MBROLA_RATE
        engine = "espeak" if spk.source.engine == "mbrola" else spk.source.engine
        return SynthItem(utt_id, split, accent, spk.speaker_id, spk.source.name, text, 50, MBROLA_RATE, wav,
                         engine=engine, warp=spk.warp, tempo=spk.tempo)
    return SynthItem(utt_id, split, accent, spk.speaker_id, spk.voice, text, rng.randint(*PITCH_RANGE),
                     rng.randint(*RATE_RANGE), wav)


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
        if old != settings:
            raise UserError(f"{out_dir} holds a corpus made with other settings ({path}: {old}); "
                            f"use another --out or delete it")
    else:
        atomic_write_text(path, json.dumps(settings, indent=1) + "\n")


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
