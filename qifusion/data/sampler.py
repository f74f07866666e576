"""Duration bucketing and DDP sharding of utterance indices into batches (pure, deterministic).

Idea as in lhotse's ``DynamicBucketingSampler`` / ESPnet's ``numel`` batching: sort utterances by
duration, cut the order into ``num_buckets`` equal-count buckets (similar lengths, little padding),
and pack each bucket greedily into batches of at most ``max_duration`` seconds of audio. In training
the utterances inside a bucket and then the batches are shuffled by a Generator seeded with
``(seed, epoch)``, so every rank computes the same batch list without communication, and a resumed
run recomputes exactly the list it was in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_SHUFFLE_STREAM = 0x0B0C  # separates this Generator from the per-utterance augmentation ones


def make_batches(
    durations: Sequence[float],
    *,
    max_duration: float,
    num_buckets: int = 10,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
) -> list[list[int]]:
    """Index batches covering every utterance once.

    Each batch holds at most ``max_duration`` seconds in total, except that an utterance longer than
    ``max_duration`` forms a batch by itself. Without ``shuffle`` the batches follow increasing duration.
    """
    if max_duration <= 0:
        raise ValueError(f"max_duration must be > 0, got {max_duration}")
    n = len(durations)
    if n == 0:
        return []
    dur = np.asarray(durations, dtype=np.float64)
    order = np.argsort(dur, kind="stable")
    buckets = [b for b in np.array_split(order, max(1, min(num_buckets, n))) if b.size]
    seq = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, _SHUFFLE_STREAM])
    rng = np.random.Generator(np.random.PCG64(seq))
    batches: list[list[int]] = []
    for bucket in buckets:
        items = rng.permutation(bucket) if shuffle else bucket
        cur: list[int] = []
        total = 0.0
        for i in items.tolist():
            if cur and total + dur[i] > max_duration:
                batches.append(cur)
                cur, total = [], 0.0
            cur.append(i)
            total += dur[i]
        if cur:
            batches.append(cur)
    if shuffle:
        perm = rng.permutation(len(batches))
        batches = [batches[k] for k in perm.tolist()]
    return batches


def shard_batches(
    batches: Sequence[list[int]], *, rank: int, world_size: int, pad: bool
) -> list[list[int]]:
    """This rank's batches; every rank gets the same number, so no DDP rank waits forever.

    ``pad=False`` (training) drops the last ``len % world_size`` batches (a different set each epoch,
    as the list is shuffled per epoch); ``pad=True`` (evaluation) repeats batches from the start so no
    utterance is lost (repeated utterances then appear twice across ranks). With fewer batches than
    ranks, batches are always repeated so that every rank gets one.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    n = len(batches)
    if world_size == 1 or n == 0:
        return list(batches)
    per_rank = -(-n // world_size) if pad or n < world_size else n // world_size
    total = per_rank * world_size
    padded = [batches[k % n] for k in range(total)]
    return padded[rank::world_size]


def buffer_shuffle(n: int, *, buffer_size: int, rng: np.random.Generator) -> list[int]:
    """Order in which a bounded shuffle buffer emits a stream of ``n`` items (a permutation of 0..n-1).

    WebDataset's ``shuffle(bufsize)`` idea: items enter a buffer of ``buffer_size`` in stream order; once
    it is full, each arriving item evicts a uniformly chosen buffered one; the rest leave in random order
    at the end. An item is emitted at most ``buffer_size`` items after it was read, so a streaming reader
    following this order keeps at most ``buffer_size`` items in memory. ``buffer_size <= 1``: stream order.
    """
    if buffer_size <= 1:
        return list(range(n))
    buf = list(range(min(n, buffer_size)))
    out: list[int] = []
    draws = rng.integers(buffer_size, size=max(0, n - buffer_size)).tolist()  # one per evicting arrival
    for i, k in zip(range(buffer_size, n), draws, strict=True):
        out.append(buf[k])
        buf[k] = i
    out.extend(buf[k] for k in rng.permutation(len(buf)).tolist())
    return out


def pack_in_order(durations: Sequence[float], *, max_duration: float) -> list[list[int]]:
    """Cut a stream into consecutive batches of at most ``max_duration`` seconds (indices into it).

    An item longer than ``max_duration`` forms a batch by itself. No sorting: a stream cannot be
    bucketed globally, so batches mix lengths (more padding than :func:`make_batches`).
    """
    if max_duration <= 0:
        raise ValueError(f"max_duration must be > 0, got {max_duration}")
    batches: list[list[int]] = []
    cur: list[int] = []
    total = 0.0
    for i, d in enumerate(durations):
        if cur and total + d > max_duration:
            batches.append(cur)
            cur, total = [], 0.0
        cur.append(i)
        total += d
    if cur:
        batches.append(cur)
    return batches
