"""Training fbank computed once per (utterance, speed factor), then read back (``data.feature_cache``).

On this project's two-core machine the loader's fbank competes with the model's two torch threads: each
epoch recomputes the fbank of every utterance at its drawn speed factor. icefall's recipes compute the
fbank once, of the speed-perturbed copies too (lhotse ``perturb_speed``, then stored features), and train
on stored features; this cache does the same lazily, inside one training run, with no preparation step:

* the fbank of ``speed_perturb(audio, factor)`` is computed on first use, with dither drawn from a
  Generator seeded by ``(seed, utterance, factor)`` (not by the epoch), and stored as float16 ``.npy``
  under the run's ``EXP/fbank_cache`` (written atomically: a temporary file, then a rename, so workers and
  DDP ranks that compute the same entry never leave a partial file; an unreadable entry is recomputed,
  and one that cannot be written, on a full disk, is used unstored with one warning per process);
* every epoch then draws, from ``utt_rng(seed, epoch, utterance)`` as before, the speed factor, the silence
  padding (its fbank appended in the feature domain), VTLP and SpecAugment.

So a batch is still a pure function of ``(seed, epoch, utterance ids)`` (exact resume, any number of workers
or ranks, a cold or warm cache); what changes against on-the-fly features is that the dither of the
speech part is fixed per (utterance, factor) and that the padding's frames are computed apart from the
speech's (the one or two frames where they meet differ).
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from qifusion.config import DataConfig
from qifusion.data.augment import augment_features, draw_stretch, speed_perturb, utt_rng
from qifusion.data.features import compute_fbank
from qifusion.data.manifest import Utterance
from qifusion.fileio import atomic_write

log = logging.getLogger(__name__)

CACHE_DIR_NAME = "fbank_cache"
FRAME_SHIFT_S = 0.01
_VERSION = 1  # bump when what an entry holds changes


class FeatureCache:
    """The fbank of (utterance, speed factor) for one run's data settings and seed, stored under ``root``."""

    def __init__(self, root: Path, *, cfg: DataConfig, seed: int) -> None:
        self.root = Path(root)
        self.cfg = cfg
        self.seed = seed
        self._write_failed = False  # warned once per process that an entry could not be stored

    def path(self, utt: Utterance, factor: float) -> Path:
        """Where the entry of ``utt`` at speed ``factor`` lives: a hash of everything its frames depend on."""
        c = self.cfg
        key = repr((_VERSION, utt.utt_id, str(utt.audio), utt.start, utt.end, round(factor, 6), c.sample_rate,
                    c.num_mel_bins, c.dither, self.seed))
        h = hashlib.sha1(key.encode("utf-8")).hexdigest()
        return self.root / h[:2] / f"{h[2:]}.npy"

    def fbank(self, utt: Utterance, factor: float, read: Callable[[], np.ndarray]) -> torch.Tensor:
        """(T, F) float32 fbank of ``read()`` (N,) at speed ``factor``: the stored entry, else computed and
        stored. A computed entry is returned as stored (float16-rounded): a cold and a warm cache agree."""
        path = self.path(utt, factor)
        try:
            return torch.from_numpy(np.load(path).astype(np.float32))
        except (OSError, ValueError, EOFError):
            pass  # absent, or unreadable (a disk error): compute it again
        samples = speed_perturb(read(), factor, sample_rate=self.cfg.sample_rate)
        key = zlib.crc32(utt.utt_id.encode("utf-8"))
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [self.seed & 0xFFFFFFFF, key, round(factor * 1e6)])))
        feats = compute_fbank(samples, sample_rate=self.cfg.sample_rate, num_mel_bins=self.cfg.num_mel_bins,
                              dither=self.cfg.dither, rng=rng).numpy().astype(np.float16)
        try:
            atomic_write(path, lambda f: np.save(f, feats), binary=True)
        except OSError as err:  # a full or read-only disk: train on, computing what cannot be stored
            if not self._write_failed:
                log.warning("feature cache %s: cannot store entries (%s); their fbank is computed each epoch",
                            self.root, err)
            self._write_failed = True
        return torch.from_numpy(feats.astype(np.float32))

    def train_features(self, utt: Utterance, read: Callable[[], np.ndarray], *, epoch: int
                       ) -> tuple[torch.Tensor, float]:
        """(T, F) training features of ``utt`` in ``epoch`` and their seconds (frames x 10 ms).

        Speed factor, padding, VTLP and SpecAugment are drawn from ``utt_rng(seed, epoch, utt_id)``.
        """
        cfg = self.cfg
        rng = utt_rng(self.seed, epoch, utt.utt_id)
        lead, trail, factor = draw_stretch(cfg, rng)
        speech = self.fbank(utt, factor, read)

        def pad_frames(noise: np.ndarray) -> torch.Tensor:  # (n,) -> (~n / 160, F); no frames, no draws
            if noise.size == 0:
                return speech[:0]
            return compute_fbank(noise, sample_rate=cfg.sample_rate, num_mel_bins=cfg.num_mel_bins,
                                 dither=cfg.dither, rng=rng)

        lead_frames = pad_frames(lead)  # the lead's dither is drawn before the trail's
        feats = torch.cat([lead_frames, speech, pad_frames(trail)])
        feats = augment_features(feats, cfg=cfg, rng=rng, epoch=epoch)
        return feats, feats.shape[0] * FRAME_SHIFT_S

