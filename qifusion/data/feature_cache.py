"""Training fbank computed once per (utterance, speed factor), then read back (``data.feature_cache``).

On this project's two-core machine the loader's fbank competes with the model's two torch threads: each
epoch recomputes the fbank of every utterance at its drawn speed factor. icefall's recipes compute the
fbank once, of the speed-perturbed copies too (lhotse ``perturb_speed``, then stored features), and train
on stored features; this cache does the same inside one training run, with no preparation step: lazily,
or all at once before the first step (``data.feature_cache_prefill``, :func:`prefill`, on every core):

* the fbank of ``speed_perturb(audio, factor)`` is computed on first use (or by the prefill), with dither
  drawn from a Generator seeded by ``(seed, utterance, factor)`` (not by the epoch), and stored as float16
  ``.npy`` under the run's ``EXP/fbank_cache`` (written atomically: a temporary file, then a rename, so
  workers and DDP ranks that compute the same entry never leave a partial file; an unreadable entry is
  recomputed, and one that cannot be written, on a full disk, is used unstored with one warning per
  process);
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
import multiprocessing as mp
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from qifusion.config import DataConfig
from qifusion.data.audio import read_audio
from qifusion.data.augment import augment_features, draw_stretch, speed_perturb, utt_rng
from qifusion.data.features import compute_fbank
from qifusion.data.manifest import Utterance
from qifusion.errors import DataError
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
        return torch.from_numpy(self._compute_and_store(utt, factor, read, path).astype(np.float32))

    def ensure(self, utt: Utterance, factor: float, read: Callable[[], np.ndarray]) -> bool:
        """Compute and store the entry of ``utt`` at ``factor`` unless it is stored; True if computed."""
        path = self.path(utt, factor)
        if path.is_file():
            return False
        self._compute_and_store(utt, factor, read, path)
        return True

    def _compute_and_store(self, utt: Utterance, factor: float, read: Callable[[], np.ndarray],
                           path: Path) -> np.ndarray:
        """(T, F) float16 fbank of the entry, stored at ``path`` (used unstored if the disk refuses)."""
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
        return feats

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


def read_utterance(utt: Utterance, *, sample_rate: int) -> np.ndarray:
    """(N,) float32 samples of ``utt`` (its segment) at ``sample_rate`` (DataError if unreadable)."""
    return read_audio(utt.audio, start=utt.start, end=utt.end, target_sr=sample_rate, utt_id=utt.utt_id)


@dataclass
class PrefillStats:
    """What :func:`prefill` did: ``entries`` (utterance, speed factor) pairs, of which ``computed`` were
    missing and are now stored; ``failed`` utterances could not be read (the loader skips and counts them)."""

    entries: int
    computed: int
    failed: int
    seconds: float


_WORKER_CACHE: FeatureCache | None = None


def _init_worker(cache: FeatureCache) -> None:
    global _WORKER_CACHE
    torch.set_num_threads(1)
    _WORKER_CACHE = cache


def _fill(job: tuple[Utterance, float], cache: FeatureCache | None = None) -> tuple[str, bool, str | None]:
    """One entry (in a worker: its process's cache): (utterance id, computed, error of an unreadable one)."""
    cache = cache or _WORKER_CACHE
    assert cache is not None
    utt, factor = job
    try:
        read = partial(read_utterance, utt, sample_rate=cache.cfg.sample_rate)
        return utt.utt_id, cache.ensure(utt, factor, read), None
    except DataError as err:
        return utt.utt_id, False, str(err)


def prefill(cache: FeatureCache, utts: Sequence[Utterance], *, processes: int = 1,
            progress: bool = False) -> PrefillStats:
    """Store the entry of every utterance of ``utts`` at every speed factor of ``cache.cfg.speed_perturb``
    (1.0 when it is empty) that is not stored yet, in ``processes`` worker processes.

    The entries are those that training would compute on first use (same dither seeds), so the batches and
    weights of a run are the same with or without it; only the loader's work moves out of the training
    steps (``data.feature_cache_prefill``, docs/train.md). Unreadable utterances are counted, not raised.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    factors = sorted(set(cache.cfg.speed_perturb)) or [1.0]
    jobs = [(u, f) for u in utts for f in factors]
    computed = 0
    failed: set[str] = set()
    bar = tqdm(total=len(jobs), desc="fbank cache", unit="entry", disable=not progress, file=sys.stderr)
    pool = None
    if processes > 1 and len(jobs) > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        pool = ctx.Pool(processes, initializer=_init_worker, initargs=(cache,))
        results = pool.imap_unordered(_fill, jobs, chunksize=16)
    else:
        results = map(partial(_fill, cache=cache), jobs)
    try:
        for utt_id, did, err in results:
            computed += did
            if err is not None:
                if not failed:
                    log.warning("feature cache: %s (skipped; the loader counts unreadable utterances)", err)
                failed.add(utt_id)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    return PrefillStats(entries=len(jobs), computed=computed, failed=len(failed),
                        seconds=time.perf_counter() - t0)
