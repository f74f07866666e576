"""Batches streamed from tar shards (:mod:`qifusion.data.shards`): the loader for corpora read sequentially.

Each epoch's batches are planned from metadata alone (the shards' ``.jsonl`` sidecars), then executed by
reading this rank's tars front to back:

1. shard order: in training a permutation by ``(seed, epoch)``, the same on every rank (as
   :func:`qifusion.data.shards.iter_shards`); rank ``r`` of ``w`` takes shards ``r, r+w, ...`` of it;
2. item order: in training the rank's stream passes a bounded shuffle buffer
   (:func:`qifusion.data.sampler.buffer_shuffle`, ``cfg.shuffle_buffer`` items, Generator from
   ``(seed, epoch, rank)``); stream order otherwise;
3. batches: consecutive items up to ``cfg.max_duration`` seconds
   (:func:`qifusion.data.sampler.pack_in_order`).

Features come from :func:`qifusion.data.dataset.utterance_features`, a function of
``(seed, epoch, utt_id)`` as in the file loader, so the same utterance gets the same augmented features
from either loader. Every rank plans every rank's stream (metadata only, O(utterances) per epoch) and in
training keeps ``min`` over ranks batches, so ``len(loader)`` is equal on all ranks without
communication; the dropped tail of longer ranks differs per epoch (the shard order changes). Evaluation
keeps each rank's own count (it has no per-batch collectives). Resume: ``state_dict()`` holds
``(epoch, pos)``; ``load_state_dict`` + ``set_epoch(epoch)`` re-plan the epoch, read the tars again up
to that position without decoding the audio of skipped batches, and continue with bitwise the batches
an uninterrupted run sees. Memory: at most ``shuffle_buffer`` (+ one batch) items' FLAC bytes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qifusion.config import DataConfig
from qifusion.data.dataset import (
    Batch,
    _Entry,
    _LoaderBase,
    build_batch,
    check_utterance,
    utterance_features,
)
from qifusion.data.manifest import Utterance
from qifusion.data.sampler import buffer_shuffle, pack_in_order
from qifusion.data.shards import INDEX_NAME, decode_audio, iter_raw, list_shards, read_shard_meta
from qifusion.data.tokenizer import Tokenizer
from qifusion.errors import DataError

log = logging.getLogger(__name__)
_BUFFER_STREAM = 0x5EA5  # separates the shuffle-buffer Generator from the augmentation ones
Ref = tuple[int, int]  # (shard index, item index in that shard's kept entries)


def shard_dir_of(split_dir: str | Path) -> Path | None:
    """``split_dir/shards`` when it holds a shard index, else None."""
    d = Path(split_dir) / "shards"
    return d if (d / INDEX_NAME).is_file() else None


def shard_utterances(shard_dir: str | Path) -> list[Utterance]:
    """Utterances listed by the shards' metadata (``audio`` is ``TAR#KEY``, not readable by read_audio)."""
    return [Utterance(m.utt_id, f"{path}#{m.key}", m.text, m.accent, m.speaker, duration=m.duration)
            for path in list_shards(shard_dir) for m in read_shard_meta(path)]


def shard_cmvn_features(shard_dir: str | Path, *, cfg: DataConfig, max_utts: int) -> Iterator[torch.Tensor]:
    """Plain fbank (T, F) of the first ``max_utts`` streamed utterances (shards are shuffled when written)."""
    n = 0
    for path in list_shards(shard_dir):
        for key, _, flac in iter_raw(path):
            if n >= max_utts:
                return
            samples = decode_audio(flac, path=path, key=key)
            yield utterance_features(samples, cfg=cfg, train=False, seed=0, epoch=0, utt_id=key)[0]
            n += 1


class _Missing:
    """Reader for an item the tar did not deliver (truncated or corrupt shard)."""

    def __init__(self, msg: str) -> None:
        self.msg = msg

    def __call__(self) -> np.ndarray:
        raise DataError(self.msg)


class _ShardBatchMaker(torch.utils.data.Dataset):
    """Map-style dataset whose "index" is ``(epoch, [(entry, reader)])``: runs in DataLoader workers."""

    def __init__(self, *, cfg: DataConfig, train: bool, seed: int) -> None:
        self.cfg, self.train, self.seed = cfg, train, seed

    def __len__(self) -> int:  # pragma: no cover - only a sampler indexes it
        return 0

    def __getitem__(self, key: tuple[int, list[tuple[_Entry, Callable[[], np.ndarray]]]]) -> Batch:
        epoch, items = key
        return build_batch(items, cfg=self.cfg, train=self.train, seed=self.seed, epoch=epoch)


class ShardLoader(_LoaderBase):
    """Iterable of :class:`Batch` for one rank, streamed from shards; same interface as ``dataset.Loader``."""

    def __init__(self, paths: list[Path], entries: list[list[tuple[str, _Entry]]], *, cfg: DataConfig,
                 train: bool, seed: int, rank: int, world_size: int, skipped: dict[str, int],
                 skip_examples: dict[str, str]) -> None:
        super().__init__(cfg=cfg, train=train, seed=seed, rank=rank, world_size=world_size, skipped=skipped,
                         skip_examples=skip_examples)
        self.paths, self.entries = paths, entries
        self._maker = _ShardBatchMaker(cfg=cfg, train=train, seed=seed)
        self._cache: tuple[int, list[list[Ref]]] | None = None

    # -------------------------------------------------------------- info
    @property
    def num_utts(self) -> int:
        return sum(len(e) for e in self.entries)

    @property
    def total_duration(self) -> float:
        """Seconds of audio over all kept utterances (all ranks)."""
        return sum(e.duration for es in self.entries for _, e in es)

    # -------------------------------------------------------------- planning
    def rank_shards(self, rank: int) -> list[int]:
        """Indices of the shards ``rank`` reads this epoch, in reading order."""
        order = list(range(len(self.paths)))
        if self.train:
            random.Random(self.seed * 100003 + self.epoch).shuffle(order)
        return order[rank::self.world_size]

    def _plan_rank(self, rank: int) -> list[list[Ref]]:
        stream = [(s, j) for s in self.rank_shards(rank) for j in range(len(self.entries[s]))]
        if self.train:
            seq = np.random.SeedSequence([self.seed & 0xFFFFFFFF, self.epoch, rank, _BUFFER_STREAM])
            rng = np.random.Generator(np.random.PCG64(seq))
            stream = [stream[i] for i in buffer_shuffle(len(stream), buffer_size=self.cfg.shuffle_buffer,
                                                        rng=rng)]
        durations = [self.entries[s][j][1].duration for s, j in stream]
        return [[stream[i] for i in b] for b in pack_in_order(durations, max_duration=self.cfg.max_duration)]

    def batch_refs(self) -> list[list[Ref]]:
        """This rank's batches of the current epoch as (shard, item) references."""
        if self._cache is None or self._cache[0] != self.epoch:
            mine = self._plan_rank(self.rank)
            if self.train and self.world_size > 1:
                others = (len(self._plan_rank(r)) for r in range(self.world_size) if r != self.rank)
                mine = mine[:min(len(mine), *others)]
            self._cache = (self.epoch, mine)
        return self._cache[1]

    def batch_utt_ids(self) -> list[list[str]]:
        """This rank's batches of the current epoch, as utterance ids (no audio is read)."""
        return [[self.entries[s][j][1].utt.utt_id for s, j in b] for b in self.batch_refs()]

    def __len__(self) -> int:
        return len(self.batch_refs())

    # -------------------------------------------------------------- streaming
    def _stream(self, shard_ids: list[int]) -> Iterator[tuple[int, str | None, bytes]]:
        """``(shard, key, flac)`` of wanted items in reading order; ``(shard, None, b"")`` ends a shard."""
        for s in shard_ids:
            wanted = {k for k, _ in self.entries[s]}
            try:
                for key, _, flac in iter_raw(self.paths[s]):
                    if key in wanted:
                        yield s, key, flac
            except DataError as e:
                log.warning("shard %s: %s; its remaining utterances are skipped", self.paths[s], e)
            yield s, None, b""

    def _work(self, epoch: int, batches: list[list[Ref]], start: int) -> Iterator[tuple[int, list[Any]]]:
        """Batch inputs ``(epoch, [(entry, reader)])`` from ``start`` on (earlier ones: read, not decoded)."""
        stream = self._stream(self.rank_shards(self.rank))
        pending: dict[tuple[int, str], bytes] = {}
        finished: set[int] = set()
        for bi, batch in enumerate(batches):
            items = []
            for s, j in batch:
                key, entry = self.entries[s][j]
                while (s, key) not in pending and s not in finished:
                    t, k, data = next(stream, (s, None, b""))
                    if k is None:
                        finished.add(t)
                    else:
                        pending[(t, k)] = data
                data = pending.pop((s, key), None)
                if bi < start:
                    continue
                path = self.paths[s]
                reader: Callable[[], np.ndarray] = (
                    _Missing(f"{path}: entry {key} (utterance '{entry.utt.utt_id}') missing from the shard")
                    if data is None else partial(decode_audio, data, path=path, key=key))
                items.append((entry, reader))
            if bi >= start:
                yield epoch, items

    def __iter__(self) -> Iterator[Batch]:
        epoch, batches = self.epoch, self.batch_refs()
        start = self._start(len(batches))
        return self._run(self._work(epoch, batches, start), start=start, parallel=len(batches) - start > 1)

    # -------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """Position to resume from (epoch, batches consumed) and what the plan depends on."""
        return {"kind": "shards", "epoch": self.epoch, "pos": self._pos, "seed": self.seed,
                "world_size": self.world_size, "num_utts": self.num_utts,
                "read_skipped": dict(self._read_skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at the next batch of ``state['epoch']`` (call ``set_epoch`` with that epoch)."""
        pos = int(state["pos"])
        if state.get("kind") != "shards":
            log.warning("the checkpoint's loader read files, not shards: the resumed epoch is not a replay")
        if state.get("num_utts", self.num_utts) != self.num_utts or state.get("seed", self.seed) != self.seed:
            log.warning("data or seed changed since the checkpoint: the resumed epoch is not an exact replay")
        old_ws = int(state.get("world_size", self.world_size))
        if old_ws != self.world_size:
            log.warning("world size changed %d -> %d: resuming epoch at a proportional position",
                        old_ws, self.world_size)
            pos = pos * old_ws // self.world_size
        self.epoch, self._pos, self._done = int(state["epoch"]), pos, False
        self._read_skipped = dict(state.get("read_skipped", {}))


def build_shard_loader(
    shard_dir: str | Path,
    *,
    cfg: DataConfig,
    tokenizer: Tokenizer,
    accents: Sequence[str],
    train: bool,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> ShardLoader:
    """Check and tokenise the shards' metadata (skip reasons as ``build_loader``); this rank's loader.

    Training needs at least ``world_size`` shards (DataError otherwise: a rank would get no data).
    """
    paths = list_shards(shard_dir)
    if train and len(paths) < world_size:
        raise DataError(f"{Path(shard_dir) / INDEX_NAME}: {len(paths)} shard(s) for {world_size} ranks; "
                        f"write at least {world_size} (prepare --shards N)")
    accent_ids = {a: i for i, a in enumerate(accents)}
    entries: list[list[tuple[str, _Entry]]] = []
    skipped: dict[str, int] = {}
    examples: dict[str, str] = {}
    total = 0
    for path in paths:
        kept = []
        for m in read_shard_meta(path):
            total += 1
            u = Utterance(m.utt_id, f"{path}#{m.key}", m.text, m.accent, m.speaker, duration=m.duration)
            res = check_utterance(u, cfg=cfg, tokenizer=tokenizer, accent_ids=accent_ids, train=train)
            if isinstance(res, _Entry):
                kept.append((m.key, res))
            else:
                skipped[res[0]] = skipped.get(res[0], 0) + 1
                examples.setdefault(res[0], res[1])
        entries.append(kept)
    if skipped:
        log.warning("left out %d of %d utterances: %s", sum(skipped.values()), total,
                    ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())))
    return ShardLoader(paths, entries, cfg=cfg, train=train, seed=seed, rank=rank, world_size=world_size,
                       skipped=skipped, skip_examples=examples)
