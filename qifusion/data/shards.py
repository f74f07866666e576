"""WebDataset-style tar shards for corpora too large for random access (e.g. KeSpeech, ~1,500 h).

Layout of ``DIR/<split>/shards/``::

    shards.json          # index: format, sample_rate, shards [{path, meta, num_utts, seconds}], skipped
    shard-000000.tar     # members 00000000.flac + 00000000.json, 00000001.flac + ..., in order
    shard-000000.jsonl   # the JSONs of shard-000000.tar (+ "key"), in the same order
    shard-000001.tar ...

Each utterance is one FLAC (16-bit mono, resampled to ``sample_rate``, segment already cut) and one
JSON (``utt_id, text, accent, speaker, duration``), sharing a numeric key, the WebDataset convention
(the utterance id lives in the JSON because ids may contain dots). The ``.jsonl`` sidecar repeats the
JSONs so that a training loader can plan an epoch's batches without reading audio (metadata apart from
audio, as in lhotse Shar's ``cuts.N.jsonl.gz`` beside ``recording.N.tar``); shards written without it
are scanned once instead (:func:`read_shard_meta`). Utterances are shuffled once with
``seed`` before they are cut into shards, so each shard mixes accents and speakers. Readers stream a
tar sequentially (``tarfile`` mode ``r|``), which suits network/object storage and spinning disks.
DDP: rank r of w reads shards ``r, r+w, ...`` (fold DataLoader workers in as
``rank = rank * num_workers + worker_id``, ``world_size = world_size * num_workers``).
"""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import soundfile as sf

from qifusion.data.audio import read_audio
from qifusion.data.manifest import Utterance
from qifusion.errors import DataError
from qifusion.fileio import atomic_write, atomic_write_text

INDEX_NAME = "shards.json"
FORMAT = "qifusion-tar-v1"


class ShardMeta(NamedTuple):
    """One utterance's metadata in shard order (``key``: the tar member stem)."""

    key: str
    utt_id: str
    text: str | None
    accent: str | None
    speaker: str | None
    duration: float


class ShardItem(NamedTuple):
    """One utterance read back from a shard; ``samples`` is (N,) float32 mono in [-1, 1]."""

    utt_id: str
    samples: np.ndarray
    text: str | None
    accent: str | None


@dataclass
class ShardReport:
    """Result of :func:`write_shards`."""

    num_shards: int = 0
    num_utts: int = 0
    seconds: float = 0.0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        s = f"{self.num_utts} utts ({self.seconds / 3600:.2f} h) in {self.num_shards} shards"
        for reason, n in sorted(self.skipped.items()):
            s += f"; skipped {n} x {reason} (e.g. {self.examples[reason]})"
        return s


def _encode(samples: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # deterministic bytes for the same input
    tar.addfile(info, io.BytesIO(data))


def _write_one(path: Path, utts: list[tuple[int, Utterance]], sample_rate: int) -> dict[str, Any]:
    """Write one shard + its ``.jsonl``; returns {num_utts, seconds, skipped: {reason: [example, count]}}."""
    stats: dict[str, Any] = {"num_utts": 0, "seconds": 0.0, "skipped": {}}
    metas: list[str] = []

    def writer(f: IO[Any]) -> None:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, u in utts:
                try:
                    x = read_audio(u.audio, start=u.start, end=u.end, target_sr=sample_rate, utt_id=u.utt_id)
                except DataError as e:
                    ex, n = stats["skipped"].get("unreadable audio", [str(e), 0])
                    stats["skipped"]["unreadable audio"] = [ex, n + 1]
                    continue
                meta = {"utt_id": u.utt_id, "text": u.text, "accent": u.accent, "speaker": u.speaker,
                        "duration": round(len(x) / sample_rate, 4)}
                _add(tar, f"{key:08d}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
                _add(tar, f"{key:08d}.flac", _encode(x, sample_rate))
                metas.append(json.dumps({"key": f"{key:08d}", **meta}, ensure_ascii=False))
                stats["num_utts"] += 1
                stats["seconds"] += len(x) / sample_rate

    atomic_write(path, writer, binary=True)
    atomic_write_text(path.with_suffix(".jsonl"), "".join(m + "\n" for m in metas))
    return stats


def write_shards(
    utts: Sequence[Utterance],
    out_dir: str | os.PathLike[str],
    *,
    num_shards: int,
    seed: int = 0,
    sample_rate: int = 16000,
    jobs: int = 1,
) -> ShardReport:
    """Write ``utts`` as ``num_shards`` tar shards + ``shards.json`` into ``out_dir``.

    Unreadable audio is skipped and counted (``report.skipped``). ``jobs > 1`` writes shards in
    parallel processes. Shards are written atomically; ``shards.json`` is written last.
    """
    if num_shards < 1:
        raise DataError(f"num_shards must be >= 1, got {num_shards}")
    out_dir = Path(out_dir)
    order = list(enumerate(utts))
    random.Random(seed).shuffle(order)
    n = min(num_shards, max(1, len(order)))
    bounds = [round(i * len(order) / n) for i in range(n + 1)]
    keyed = [(k, u) for k, (_, u) in enumerate(order)]
    parts = [keyed[bounds[i]:bounds[i + 1]] for i in range(n)]
    paths = [out_dir / f"shard-{i:06d}.tar" for i in range(n)]
    if jobs > 1 and n > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, n)) as pool:
            results = list(pool.map(_write_one, paths, parts, [sample_rate] * n))
    else:
        results = [_write_one(p, part, sample_rate) for p, part in zip(paths, parts, strict=True)]
    for stale in sorted(out_dir.glob("shard-*.tar"))[n:]:
        stale.unlink()
        stale.with_suffix(".jsonl").unlink(missing_ok=True)
    report = ShardReport(num_shards=n)
    entries = []
    for p, r in zip(paths, results, strict=True):
        entries.append({"path": p.name, "meta": p.with_suffix(".jsonl").name, "num_utts": r["num_utts"],
                        "seconds": round(r["seconds"], 3)})
        report.num_utts += r["num_utts"]
        report.seconds += r["seconds"]
        for reason, (ex, cnt) in r["skipped"].items():
            report.skipped[reason] = report.skipped.get(reason, 0) + cnt
            report.examples.setdefault(reason, ex)
    index = {"format": FORMAT, "sample_rate": sample_rate, "seed": seed, "num_utts": report.num_utts,
             "seconds": round(report.seconds, 3), "shards": entries, "skipped": report.skipped}
    atomic_write_text(out_dir / INDEX_NAME, json.dumps(index, indent=1, ensure_ascii=False))
    return report


def read_index(shard_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``shard_dir/shards.json`` (DataError when absent or malformed)."""
    index = Path(shard_dir) / INDEX_NAME
    try:
        meta = json.loads(index.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{index}: cannot read shard index ({e.strerror})") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{index}: not valid JSON ({e.msg})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise DataError(f"{index}: unknown shard format {got!r} (expected {FORMAT})")
    return meta


def list_shards(shard_dir: str | os.PathLike[str]) -> list[Path]:
    """Shard paths listed in ``shard_dir/shards.json`` (DataError when absent or malformed)."""
    return [Path(shard_dir) / s["path"] for s in read_index(shard_dir)["shards"]]


def iter_raw(path: str | os.PathLike[str], *, audio: bool = True) -> Iterator[tuple[str, bytes, bytes]]:
    """Stream ``(key, json bytes, flac bytes)`` of one tar shard in order, nothing decoded.

    ``audio=False`` yields ``b""`` for the audio (the tar is still read through, without keeping it).
    """
    path = Path(path)
    pending: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.rpartition("/")[2].partition(".")
                f = tar.extractfile(member)
                if f is None:
                    continue
                entry = pending.setdefault(key, {})
                entry[ext] = f.read() if audio or ext == "json" else b""
                if "json" in entry and "flac" in entry:
                    del pending[key]
                    yield key, entry["json"], entry["flac"]
    except tarfile.TarError as e:
        raise DataError(f"{path}: corrupt shard ({e})") from e
    if pending:
        raise DataError(f"{path}: incomplete entries {sorted(pending)[:3]} (audio or JSON missing)")


def decode_audio(data: bytes, *, path: str | os.PathLike[str], key: str) -> np.ndarray:
    """(N,) float32 samples of one entry's FLAC bytes (DataError naming shard and entry)."""
    try:
        samples, _ = sf.read(io.BytesIO(data), dtype="float32")
    except Exception as e:
        raise DataError(f"{path}: entry {key} has unreadable audio ({e})") from e
    return samples


def _meta(raw: bytes | str, path: Path, key: str) -> ShardMeta:
    try:
        m = json.loads(raw)
        return ShardMeta(str(m.get("key", key)), m["utt_id"], m.get("text"), m.get("accent"),
                         m.get("speaker"), float(m["duration"]))
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: entry {key} has bad metadata ({e})") from e


def read_shard_meta(path: str | os.PathLike[str]) -> list[ShardMeta]:
    """Metadata of one shard's utterances in tar order: from the ``.jsonl`` sidecar, else by scanning."""
    path = Path(path)
    side = path.with_suffix(".jsonl")
    if side.exists():
        lines = side.read_text(encoding="utf-8").splitlines()
        return [_meta(line, side, f"line {i + 1}") for i, line in enumerate(lines) if line.strip()]
    return [_meta(js, path, key) for key, js, _ in iter_raw(path, audio=False)]


def read_shard(path: str | os.PathLike[str]) -> Iterator[ShardItem]:
    """Stream the utterances of one tar shard in order."""
    for key, js, flac in iter_raw(path):
        meta = _meta(js, Path(path), key)
        yield ShardItem(meta.utt_id, decode_audio(flac, path=path, key=key), meta.text, meta.accent)


def iter_shards(
    shards: Sequence[str | os.PathLike[str]],
    *,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
) -> Iterator[ShardItem]:
    """Yield the items of this rank's shards (``shards[rank::world_size]``), each read sequentially.

    ``shuffle``: the shard order is permuted by ``(seed, epoch)`` first (same on every rank).
    """
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} out of range for world_size {world_size}")
    order = [Path(s) for s in shards]
    if shuffle:
        random.Random(seed * 100003 + epoch).shuffle(order)
    for path in order[rank::world_size]:
        yield from read_shard(path)
