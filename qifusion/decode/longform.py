"""Long audio (minutes to hours) through the streaming recognizer, split into segments at endpoints.

Memory stays bounded: audio is read in blocks (``soundfile.blocks``), the stream pops consumed fbank
frames, each endpoint (trailing-silence rules, plus the 20 s maximum utterance length) finishes a
segment and resets the encoder caches, the search and the rescoring memory, and finished segments
are handed to the caller instead of being kept in the stream. Full attention over an hour would be
O(T^2); here the work per chunk depends only on the chunk size and the cache length.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf

from qifusion.data.audio import check_sample_rate
from qifusion.decode.recognizer import Recognizer
from qifusion.decode.stream import Segment, Stream
from qifusion.errors import DataError


@dataclass
class LongformResult:
    """Segments of a long recording (times in seconds) and whole-file summaries."""

    segments: list[Segment] = field(default_factory=list)
    duration: float = 0.0
    accent: str | None = None
    accent_prob: float = 0.0
    accent_probs: dict[str, float] = field(default_factory=dict)  # duration-weighted mean over segments

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)


def iter_audio_blocks(
    path: str | os.PathLike[str], *, block_seconds: float = 1.0
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(sample_rate, samples (N,) float32 mono)`` blocks of a file without reading it whole."""
    try:
        info = sf.info(os.fspath(path))
    except Exception as e:
        raise DataError(f"audio '{path}': unreadable audio ({e})") from e
    sr = int(info.samplerate)
    check_sample_rate(sr, f"audio '{path}'")
    blocksize = max(1, int(block_seconds * sr))
    blocks = sf.blocks(os.fspath(path), blocksize=blocksize, dtype="float32", always_2d=True)
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            return
        except Exception as e:
            raise DataError(f"audio '{path}': unreadable audio ({e})") from e
        if not np.all(np.isfinite(block)):
            raise DataError(f"audio '{path}': audio contains NaN or infinite samples")
        yield sr, (block.mean(axis=1) if block.shape[1] > 1 else block[:, 0])


def _finish_segment(rec: Recognizer, s: Stream, out: list[Segment]) -> None:
    seg = rec.reset(s)
    s.segments.clear()  # the caller keeps them; the stream must not grow over hours
    if seg.text:
        out.append(seg)


def decode_long(rec: Recognizer, pieces: Iterable[tuple[int, np.ndarray]]) -> LongformResult:
    """Decode audio given as ``(sample_rate, samples)`` pieces, splitting at endpoints.

    Args:
        rec: a streaming recognizer (its ``config.endpoint`` rules decide the segments).
        pieces: audio pieces of any size (e.g. from :func:`iter_audio_blocks`).
    Returns:
        The non-empty segments in time order, the audio duration and the whole-file accent
        (posteriors weighted by segment length).
    """
    s = rec.create_stream()
    segments: list[Segment] = []
    for sr, samples in pieces:
        s.accept_waveform(sr, samples)
        while rec.is_ready(s):
            rec.decode(s)
            if rec.is_endpoint(s):
                _finish_segment(rec, s, segments)
    s.input_finished()
    while rec.is_ready(s):
        rec.decode(s)
        if rec.is_endpoint(s):
            _finish_segment(rec, s, segments)
    _finish_segment(rec, s, segments)
    accent, prob, probs = _file_accent(segments)
    return LongformResult(segments=segments, duration=s.duration, accent=accent, accent_prob=prob,
                          accent_probs=probs)


def _file_accent(segments: list[Segment]) -> tuple[str | None, float, dict[str, float]]:
    totals: dict[str, float] = {}
    weight = 0.0
    for seg in segments:
        w = max(seg.end - seg.start, 1e-3)
        weight += w
        for a, p in seg.accent_probs.items():
            totals[a] = totals.get(a, 0.0) + w * p
    if not totals:
        return None, 0.0, {}
    best = max(totals, key=totals.__getitem__)
    return best, totals[best] / weight, {a: t / weight for a, t in totals.items()}
