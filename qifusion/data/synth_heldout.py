"""The ``heldout`` preset of ``qifusion synth``: an independent held-back evaluation set (issue 7).

Only a ``test`` split, unlike the corpora the models are trained and tested on in three ways:

- speakers: only the reserved espeak-ng variants (:data:`~qifusion.data.voices.RESERVED_VARIANTS`),
  which no other preset uses, each with every accent;
- speaking rates: half of each accent's utterances from a slow band (:data:`SLOW_RATES`), half from a
  fast band (:data:`FAST_RATES`), both outside the ``RATE_RANGE`` of the other presets;
- texts: only sentences of the 5-20 word pool outside the demo's reservation
  (:func:`~qifusion.data.synth_text.corpus_pool`) that neither the ``benchmark`` nor the ``accents``
  corpus at its default size and seed 0 (:data:`EXCLUDED_PLANS`) uses.

The exclusion is computed from those plans (pure and fast, ~0.1 s after the pool is read) rather than by
carving the pool, so the benchmark corpus the accuracy study reads stays byte-identical. Another seed or
``--utts-per-accent`` of the benchmark may share sentences with this set. Pitch uses the usual range.
"""

from __future__ import annotations

import random

from qifusion.data.synth_plan import PITCH_RANGE, Preset, SynthItem, plan_splits
from qifusion.data.synth_text import corpus_pool
from qifusion.data.voices import reserved_speakers
from qifusion.errors import UserError

SLOW_RATES = (115, 140)  # espeak -s words per minute, below RATE_RANGE (145, 200)
FAST_RATES = (205, 235)  # above RATE_RANGE
EXCLUDED_PLANS = (("benchmark", 0), ("accents", 0))  # (preset, seed) at default size, all accents
SPLIT = "test"


def excluded_texts() -> set[str]:
    """Every sentence of the :data:`EXCLUDED_PLANS` corpora."""
    return {it.text for name, seed in EXCLUDED_PLANS
            for it in plan_splits(preset=name, utts_per_accent=None, seed=seed, accents=None)}


def heldout_pool(*, max_words: int) -> list[str]:
    """Sorted sentences (``max_words`` at most) outside the demo's reservation that no
    :data:`EXCLUDED_PLANS` corpus uses."""
    banned = excluded_texts()
    return [s for s in corpus_pool(max_words=max_words) if s not in banned]


def plan_heldout(*, preset: Preset, accents: list[str], utts_per_accent: int, seed: int) -> list[SynthItem]:
    """The held-back test split: ``utts_per_accent`` utterances for each of ``accents``, speakers in
    balanced rounds over the reserved variants, rates half slow / half fast (shuffled per accent).
    Same arguments -> same list."""
    if utts_per_accent < 1:
        raise UserError(f"--utts-per-accent must be at least 1 for preset '{preset.name}', "
                        f"got {utts_per_accent}")
    speakers = reserved_speakers(accents)
    pool = heldout_pool(max_words=preset.max_words)
    need = utts_per_accent * len(accents)
    if need > len(pool):
        raise UserError(f"preset '{preset.name}' needs {need} distinct held-back sentences but only "
                        f"{len(pool)} are unused by the benchmark/accents corpora: lower --utts-per-accent")
    rng = random.Random(f"qifusion-synth:{preset.name}:{seed}")
    rng.shuffle(pool)
    items: list[SynthItem] = []
    for accent in accents:
        spk = [s for s in speakers if s.accent == accent]
        n_slow = utts_per_accent // 2
        bands = [SLOW_RATES] * n_slow + [FAST_RATES] * (utts_per_accent - n_slow)
        rng.shuffle(bands)
        for i, band in enumerate(bands):
            if i % len(spk) == 0:
                order = rng.sample(spk, len(spk))  # balanced: every speaker once per round
            s, n = order[i % len(spk)], len(items)
            utt_id = f"{s.speaker_id}-{n:06d}"
            items.append(SynthItem(utt_id, SPLIT, accent, s.speaker_id, s.voice, pool[n],
                                   rng.randint(*PITCH_RANGE), rng.randint(*band),
                                   f"wav/{SPLIT}/{accent}/{utt_id}.wav"))
    return items
