"""Batches for training and evaluation: filtering, bucketing, DDP sharding, on-the-fly features, resume.

``build_loader`` checks every utterance once (transcript, accent label, duration, readability), skips
and counts the bad ones (``loader.skipped``: reason -> count, ``loader.skip_examples``: reason -> first
message naming the utterance and file), tokenises the text, and returns a :class:`Loader`.

Per epoch the loader computes the batch list from ``(seed, epoch)`` (:mod:`qifusion.data.sampler`; in
training by each utterance's length after that epoch's padding and speed draws, ``data.bucket_augmented``)
and this rank's share of it. Each batch is a pure function of ``(seed, epoch, utterance ids)``: audio ->
speed perturbation -> fbank with dither -> SpecAugment in training (randomness from
:func:`qifusion.data.augment.utt_rng`; with ``data.feature_cache``, the fbank of each (utterance, speed)
once: :mod:`qifusion.data.feature_cache`); plain fbank otherwise. Hence ``num_workers`` > 0 gives the same
batches as 0, and a run resumed from ``state_dict()`` continues with bitwise the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from qifusion.config import DataConfig
from qifusion.data.audio import audio_info
from qifusion.data.augment import (
    augment_features,
    augmented_seconds,
    draw_stretch,
    speed_perturb,
    utt_rng,
)
from qifusion.data.feature_cache import FeatureCache, PrefillStats, prefill, read_utterance
from qifusion.data.features import compute_fbank
from qifusion.data.manifest import Utterance
from qifusion.data.sampler import make_batches, shard_batches
from qifusion.data.tokenizer import Tokenizer
from qifusion.errors import DataError

log = logging.getLogger(__name__)
IGNORE_ID = -1


@dataclass
class Batch:
    """One padded batch. Features are raw fbank (CMVN is inside the model).

    ``feats`` (B, T, F) zero-padded; ``feats_lens`` (B,); ``tokens`` (B, L) padded with -1;
    ``token_lens`` (B,); ``accents`` (B,) accent ids, -1 = unknown; ``durations`` (B,) seconds of audio
    after speed perturbation. ``failed``: utterance id -> message for items dropped from this batch
    because their audio could not be read (B may then be smaller, even 0).
    """

    utt_ids: list[str]
    feats: torch.Tensor
    feats_lens: torch.Tensor
    tokens: torch.Tensor
    token_lens: torch.Tensor
    accents: torch.Tensor
    durations: torch.Tensor
    failed: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.utt_ids)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""

        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Batch(self.utt_ids, mv(self.feats), mv(self.feats_lens), mv(self.tokens), mv(self.token_lens),
                     mv(self.accents), mv(self.durations), dict(self.failed))


@dataclass
class _Entry:
    utt: Utterance
    duration: float
    tokens: list[int]
    accent: int


class _BatchMaker(torch.utils.data.Dataset):
    """Map-style dataset whose "index" is ``(epoch, [entry indices])`` and whose item is a Batch."""

    def __init__(self, entries: list[_Entry], *, cfg: DataConfig, train: bool, seed: int,
                 cache: FeatureCache | None = None) -> None:
        self.entries = entries
        self.cfg = cfg
        self.train = train
        self.seed = seed
        self.cache = cache

    def __len__(self) -> int:  # only the sampler indexes this dataset
        return len(self.entries)

    def features(self, e: _Entry, epoch: int) -> tuple[torch.Tensor, float]:
        """(T, F) features of one utterance for ``epoch`` and its audio seconds (DataError if unreadable)."""
        samples = read_entry_audio(e, self.cfg)
        return utterance_features(samples, cfg=self.cfg, train=self.train, seed=self.seed, epoch=epoch,
                                  utt_id=e.utt.utt_id)

    def __getitem__(self, key: tuple[int, list[int]]) -> Batch:
        epoch, indices = key
        entries = [self.entries[i] for i in indices]
        return build_batch([(e, partial(read_entry_audio, e, self.cfg)) for e in entries], cfg=self.cfg,
                           train=self.train, seed=self.seed, epoch=epoch, cache=self.cache)


def read_entry_audio(e: _Entry, cfg: DataConfig) -> np.ndarray:
    """(N,) float32 samples of an entry's utterance at ``cfg.sample_rate`` (DataError if unreadable)."""
    return read_utterance(e.utt, sample_rate=cfg.sample_rate)


def utterance_features(samples: np.ndarray, *, cfg: DataConfig, train: bool, seed: int, epoch: int,
                       utt_id: str) -> tuple[torch.Tensor, float]:
    """(T, F) fbank of ``samples`` (N,) and the audio seconds after augmentation.

    Training: silence padding -> speed perturbation -> fbank with dither -> VTLP (``cfg.vtlp``) ->
    SpecAugment (from epoch ``cfg.spec_aug.start_epoch`` on), every draw from
    ``utt_rng(seed, epoch, utt_id)``; otherwise plain fbank. Shared by the file and the shard loaders.
    """
    if not train:
        feats = compute_fbank(samples, sample_rate=cfg.sample_rate, num_mel_bins=cfg.num_mel_bins)
        return feats, samples.shape[0] / cfg.sample_rate
    rng = utt_rng(seed, epoch, utt_id)
    lead, trail, factor = draw_stretch(cfg, rng)
    if lead.size or trail.size:
        samples = np.concatenate([lead, np.asarray(samples, dtype=np.float32), trail])
    samples = speed_perturb(samples, factor, sample_rate=cfg.sample_rate)
    feats = compute_fbank(samples, sample_rate=cfg.sample_rate, num_mel_bins=cfg.num_mel_bins,
                          dither=cfg.dither, rng=rng)
    return augment_features(feats, cfg=cfg, rng=rng, epoch=epoch), samples.shape[0] / cfg.sample_rate


def build_batch(items: Sequence[tuple[_Entry, Callable[[], np.ndarray]]], *, cfg: DataConfig, train: bool,
                seed: int, epoch: int, cache: FeatureCache | None = None) -> Batch:
    """A Batch from ``(entry, read samples)`` pairs; unreadable or frameless items go to ``failed``. In
    training with a ``cache`` the features come from :meth:`FeatureCache.train_features`."""
    kept: list[tuple[_Entry, torch.Tensor, float]] = []
    failed: dict[str, str] = {}
    for e, read in items:
        try:
            if train and cache is not None:
                feats, seconds = cache.train_features(e.utt, read, epoch=epoch)
            else:
                feats, seconds = utterance_features(read(), cfg=cfg, train=train, seed=seed, epoch=epoch,
                                                    utt_id=e.utt.utt_id)
        except DataError as err:
            failed[e.utt.utt_id] = str(err)
            continue
        if feats.shape[0] == 0:
            failed[e.utt.utt_id] = f"utterance '{e.utt.utt_id}' ({e.utt.audio}): too short for one frame"
            continue
        kept.append((e, feats, seconds))
    return collate(kept, num_mel_bins=cfg.num_mel_bins, failed=failed)


def collate(items: Sequence[tuple[_Entry, torch.Tensor, float]], *, num_mel_bins: int,
            failed: dict[str, str] | None = None) -> Batch:
    """Pad ``(entry, feats (T, F), seconds)`` triples into a Batch."""
    failed = failed or {}
    if not items:
        z = torch.zeros(0, dtype=torch.long)
        return Batch([], torch.zeros(0, 0, num_mel_bins), z, torch.zeros(0, 0, dtype=torch.long), z, z,
                     torch.zeros(0), failed)
    feats = [f for _, f, _ in items]
    toks = [torch.tensor(e.tokens, dtype=torch.long) for e, _, _ in items]
    tokens = pad_sequence(toks, batch_first=True, padding_value=IGNORE_ID)
    return Batch(
        utt_ids=[e.utt.utt_id for e, _, _ in items],
        feats=pad_sequence(feats, batch_first=True, padding_value=0.0),
        feats_lens=torch.tensor([f.shape[0] for f in feats], dtype=torch.long),
        tokens=tokens,
        token_lens=torch.tensor([t.numel() for t in toks], dtype=torch.long),
        accents=torch.tensor([e.accent for e, _, _ in items], dtype=torch.long),
        durations=torch.tensor([s for _, _, s in items], dtype=torch.float32),
        failed=failed,
    )


def _identity(x: Any) -> Any:
    return x


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class _LoaderBase:
    """What both loaders share: skip counting, epoch position, and the iteration that counts failures.

    Subclasses set ``self._maker`` and implement ``__len__`` / ``__iter__`` (via :meth:`_run`).
    """

    def __init__(self, *, cfg: DataConfig, train: bool, seed: int, rank: int, world_size: int,
                 skipped: dict[str, int], skip_examples: dict[str, str]) -> None:
        self.cfg, self.train, self.seed = cfg, train, seed
        self.rank, self.world_size = rank, world_size
        self._static_skipped = dict(skipped)
        self._read_skipped: dict[str, int] = {}
        self.skip_examples = dict(skip_examples)
        self.epoch = 0
        self._pos = 0  # batches of this epoch consumed
        self._done = False  # the epoch was iterated to its end (a new iteration replays it)

    @property
    def skipped(self) -> dict[str, int]:
        """reason -> number of utterances left out (at build time, and so far at read time)."""
        out = dict(self._static_skipped)
        for k, v in self._read_skipped.items():
            out[k] = out.get(k, 0) + v
        return out

    def skip_summary(self) -> str:
        """One line per skip reason with a count and the first example message."""
        return "\n".join(f"skipped {n} utterance(s): {r} (e.g. {self.skip_examples.get(r, '?')})"
                         for r, n in sorted(self.skipped.items()))

    def prefill_cache(self, *, processes: int = 1, progress: bool = False) -> PrefillStats | None:
        """Fill the feature cache before training (:class:`Loader`); None here: no cache (sharded data)."""
        return None

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch``; keeps a loaded resume position when ``epoch`` is the loaded one."""
        if epoch != self.epoch:
            self.epoch, self._pos, self._done = epoch, 0, False

    def _start(self, num_batches: int) -> int:
        """Index of the first batch this iteration yields (replays the epoch after a full pass)."""
        if self._done:
            self._pos, self._done = 0, False
        return min(self._pos, num_batches)

    def _run(self, work: list[Any] | Iterator[Any], *, start: int, parallel: bool) -> Iterator[Batch]:
        """Batches ``self._maker[w]`` for ``w`` in ``work`` (in worker processes when ``parallel``);
        counts and logs unreadable utterances and advances the position."""
        if parallel and self.cfg.num_workers > 0:
            it: Any = torch.utils.data.DataLoader(
                self._maker, batch_size=None, sampler=work, num_workers=self.cfg.num_workers,
                collate_fn=_identity, worker_init_fn=_worker_init, prefetch_factor=2,
                # its own generator: a DataLoader draws its workers' base seed from the global torch RNG
                # otherwise, which would shift the training's dropout and chunk-size draws (batches are
                # seeded per utterance and do not use that seed)
                generator=torch.Generator().manual_seed(0),
            )
        else:
            it = (self._maker[w] for w in work)
        for i, batch in enumerate(it, start=start):
            for utt_id, msg in batch.failed.items():
                self._read_skipped["unreadable"] = self._read_skipped.get("unreadable", 0) + 1
                self.skip_examples.setdefault("unreadable", msg)
                log.warning("skipping %s: %s", utt_id, msg)
            self._pos = i + 1
            yield batch
        self._done = True


class Loader(_LoaderBase):
    """Iterable of :class:`Batch` for one rank; see the module docstring.

    Use: ``loader.set_epoch(e)`` then ``for batch in loader``. ``len(loader)`` is this epoch's number
    of batches (equal on every rank). ``state_dict()`` after a batch was consumed records the position;
    ``load_state_dict()`` + ``set_epoch(same epoch)`` continues at the next batch.
    """

    def __init__(self, entries: list[_Entry], *, cfg: DataConfig, train: bool, seed: int, rank: int,
                 world_size: int, skipped: dict[str, int], skip_examples: dict[str, str],
                 cache: FeatureCache | None = None) -> None:
        super().__init__(cfg=cfg, train=train, seed=seed, rank=rank, world_size=world_size, skipped=skipped,
                         skip_examples=skip_examples)
        self._maker = _BatchMaker(entries, cfg=cfg, train=train, seed=seed, cache=cache)
        self._cache: tuple[int, list[list[int]]] | None = None

    # -------------------------------------------------------------- info
    @property
    def num_utts(self) -> int:
        return len(self._maker.entries)

    @property
    def total_duration(self) -> float:
        """Seconds of audio over all kept utterances (all ranks)."""
        return sum(e.duration for e in self._maker.entries)

    def prefill_cache(self, *, processes: int = 1, progress: bool = False) -> PrefillStats | None:
        """Compute this rank's share (every ``world_size``-th utterance) of the feature cache's entries
        before training (:func:`~qifusion.data.feature_cache.prefill`); None without a cache."""
        cache = self._maker.cache
        if cache is None:
            return None
        utts = [e.utt for e in self._maker.entries[self.rank::self.world_size]]
        return prefill(cache, utts, processes=processes, progress=progress)

    # -------------------------------------------------------------- epochs and batches
    def batch_indices(self) -> list[list[int]]:
        """This rank's batches of the current epoch, as lists of entry indices."""
        if self._cache is None or self._cache[0] != self.epoch:
            all_batches = make_batches(self._bucket_durations(),
                                       max_duration=self.cfg.max_duration, num_buckets=self.cfg.num_buckets,
                                       shuffle=self.train, seed=self.seed, epoch=self.epoch)
            mine = shard_batches(all_batches, rank=self.rank, world_size=self.world_size, pad=not self.train)
            self._cache = (self.epoch, mine)
        return self._cache[1]

    def _bucket_durations(self) -> list[float]:
        """Per entry, the seconds the sampler buckets and packs by: in training with ``bucket_augmented``,
        this epoch's length after silence padding and speed perturbation, else the utterance's own."""
        entries, c = self._maker.entries, self.cfg
        if not (self.train and c.bucket_augmented):
            return [e.duration for e in entries]
        return [augmented_seconds(e.duration, cfg=c, seed=self.seed, epoch=self.epoch, utt_id=e.utt.utt_id)
                for e in entries]

    def batch_utt_ids(self) -> list[list[str]]:
        """This rank's batches of the current epoch, as utterance ids (no audio is read)."""
        entries = self._maker.entries
        return [[entries[i].utt.utt_id for i in b] for b in self.batch_indices()]

    def __len__(self) -> int:
        return len(self.batch_indices())

    def __iter__(self) -> Iterator[Batch]:
        epoch, batches = self.epoch, self.batch_indices()
        start = self._start(len(batches))
        keys = [(epoch, b) for b in batches[start:]]
        return self._run(keys, start=start, parallel=len(keys) > 1)

    # -------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """Position to resume from: epoch, batches consumed, and what was needed to compute batches."""
        return {"epoch": self.epoch, "pos": self._pos, "seed": self.seed, "world_size": self.world_size,
                "num_utts": self.num_utts, "read_skipped": dict(self._read_skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at the next batch of ``state['epoch']`` (call ``set_epoch`` with that epoch)."""
        pos = int(state["pos"])
        if state.get("num_utts", self.num_utts) != self.num_utts or state.get("seed", self.seed) != self.seed:
            log.warning("data or seed changed since the checkpoint: the resumed epoch is not an exact replay")
        old_ws = int(state.get("world_size", self.world_size))
        if old_ws != self.world_size:
            log.warning("world size changed %d -> %d: resuming epoch at a proportional position",
                        old_ws, self.world_size)
            pos = pos * old_ws // self.world_size
        self.epoch = int(state["epoch"])
        self._pos = pos
        self._done = False
        self._read_skipped = dict(state.get("read_skipped", {}))


def _duration(u: Utterance) -> float:
    if u.duration is not None:
        return float(u.duration)
    if u.end is not None:
        return float(u.end) - float(u.start)
    _, total = audio_info(u.audio, utt_id=u.utt_id)
    return total - float(u.start)


def check_utterance(u: Utterance, *, cfg: DataConfig, tokenizer: Tokenizer, accent_ids: dict[str, int],
                    train: bool) -> _Entry | tuple[str, str]:
    """The entry for ``u``, or ``(skip reason, message)``; reasons as in :func:`build_loader`."""

    def bad(reason: str, msg: str) -> tuple[str, str]:
        return reason, f"utterance '{u.utt_id}' ({u.audio}): {msg}"

    if u.text is None:
        if train:
            return bad("missing_transcript", "no transcript")
        tokens: list[int] = []
    else:
        tokens = tokenizer.encode(u.text)
        if not tokens:
            return bad("empty_transcript", "empty transcript")
    if u.accent is None:
        accent = -1
    elif u.accent in accent_ids:
        accent = accent_ids[u.accent]
    else:
        return bad("unknown_accent", f"accent '{u.accent}' not in the accent list {list(accent_ids)}")
    try:
        dur = _duration(u)
    except DataError as e:
        return "unreadable", str(e)
    if dur < cfg.min_utt_duration:
        return bad("too_short", f"{dur:.3f} s < min_utt_duration {cfg.min_utt_duration} s")
    if train and dur > cfg.max_utt_duration:
        return bad("too_long", f"{dur:.2f} s > max_utt_duration {cfg.max_utt_duration} s")
    return _Entry(u, dur, tokens, accent)


def build_loader(
    utts: Sequence[Utterance],
    *,
    cfg: DataConfig,
    tokenizer: Tokenizer,
    accents: Sequence[str],
    train: bool,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    feature_cache: Path | None = None,
) -> Loader:
    """Check, tokenise and index ``utts``; return this rank's :class:`Loader`. ``feature_cache``: in training,
    the directory of a :class:`~qifusion.data.feature_cache.FeatureCache` (None: fbank on the fly).

    Skip reasons: ``missing_transcript`` (text None, training only; in evaluation the tokens are then
    empty), ``empty_transcript``, ``unknown_accent`` (label not in ``accents``; None -> id -1),
    ``unreadable``, ``too_short`` (< ``cfg.min_utt_duration``), ``too_long`` (> ``cfg.max_utt_duration``,
    training only).
    """
    accent_ids = {a: i for i, a in enumerate(accents)}
    entries: list[_Entry] = []
    skipped: dict[str, int] = {}
    examples: dict[str, str] = {}
    for u in utts:
        res = check_utterance(u, cfg=cfg, tokenizer=tokenizer, accent_ids=accent_ids, train=train)
        if isinstance(res, _Entry):
            entries.append(res)
        else:
            skipped[res[0]] = skipped.get(res[0], 0) + 1
            examples.setdefault(res[0], res[1])
    if skipped:
        log.warning("left out %d of %d utterances: %s", sum(skipped.values()), len(utts),
                    ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())))
    cache = FeatureCache(feature_cache, cfg=cfg, seed=seed) if feature_cache is not None and train else None
    return Loader(entries, cfg=cfg, train=train, seed=seed, rank=rank, world_size=world_size,
                  skipped=skipped, skip_examples=examples, cache=cache)
