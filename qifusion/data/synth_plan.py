"""Planning of the synthetic corpora: presets, the utterance plan (text, speaker, pitch, rate of every
utterance; pure and deterministic for a seed). Rendering and the ``qifusion synth`` pipeline are in
:mod:`.synth`; the held-back test set's plan in :mod:`.synth_heldout` (both import this module).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from qifusion.data.synth_text import corpus_pool, demo_pool
from qifusion.data.voices import ESPEAK_ACCENTS, L2_VOICES, Speaker, espeak_speakers, l2_speakers
from qifusion.data.voices_accents import (
    ACCENT_VOICES,
    FREE_ACCENTS,
    AccentSpeaker,
    accent_speakers,
    seen_source_test_speakers,
)
from qifusion.errors import UserError

SPLITS = ("train", "dev", "test")
PITCH_RANGE = (30, 70)  # espeak -p (0..99, default 50), drawn per utterance
RATE_RANGE = (145, 200)  # espeak -s words per minute (default 175), drawn per utterance
# espeak-ng -s for MBROLA voices: 145 wpm gives 0.34 s/word (accents train split), near flite and
# festival's 0.36 (espeak's default 175 gave 0.27), so speaking rate does not tell the synthesiser apart
MBROLA_RATE = 145


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


def plan_splits(*, preset: str, utts_per_accent: int | None, seed: int,
                accents: list[str] | None) -> list[SynthItem]:
    """Every utterance of a train/dev/test preset (same arguments -> same list, on any machine with the
    same text packages). Each sentence is used in one split only; in the ``accents`` presets a test
    sentence of an accent with held-out voices is spoken twice, by a held-out and by a train voice
    (:func:`_twins`)."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset '{preset}' (valid: {', '.join(PRESETS)})")
    p = PRESETS[preset]
    names = resolve_accents(p, accents)
    if p.test_only:
        raise ValueError(f"preset '{preset}' is a held-back test set: plan it with synth.plan_corpus")
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
    if p.engine == "accents":
        items += _twins(items, seen_source_test_speakers(names, free_only=p.free_only),
                        random.Random(f"qifusion-synth:{preset}:{seed}:seen-source-test"))
    return items


def _twins(items: list[SynthItem], speakers: list[AccentSpeaker], rng: random.Random) -> list[SynthItem]:
    """For each test utterance of an accent in ``speakers``, the same sentence by one of that accent's
    ``speakers`` (balanced rounds): a paired test set of held-out and train voices. Planned after every
    other item with its own ``rng``, so the rest of the plan is unchanged by it."""
    out: list[SynthItem] = []
    for accent in dict.fromkeys(s.accent for s in speakers):
        spk = [s for s in speakers if s.accent == accent]
        tests = [(n, it) for n, it in enumerate(items) if it.split == "test" and it.accent == accent]
        for i, (n, it) in enumerate(tests):  # n: the original's plan index, the number in its id
            if i % len(spk) == 0:
                order = rng.sample(spk, len(spk))
            out.append(_item("test", accent, order[i % len(spk)], it.text, rng, n))
    return out


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
