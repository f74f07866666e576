"""``qifusion transcribe``: audio files -> one JSON line per file, in input order.

Two paths that give the same transcripts for the same chunk size / left chunks / mode:

* default: the chunk-masked full forward (``model.encode``) followed by the search functions;
* ``streaming=True``: the audio is fed in 100 ms pieces through the streaming
  :class:`~qifusion.decode.recognizer.Recognizer` (several files are decoded together in one batch).

Files longer than ``long_audio_s`` are decoded by :mod:`qifusion.decode.longform` in both paths
(streaming with endpointing, bounded memory), giving several segments. A file that cannot be read, is
empty or is too short gives ``{"file", "error"}`` and the others are still transcribed.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from qifusion.data.audio import audio_info, read_audio
from qifusion.data.features import compute_fbank
from qifusion.decode.longform import decode_long, iter_audio_blocks
from qifusion.decode.recognizer import Recognizer
from qifusion.decode.stream import Segment
from qifusion.decode.streaming_search import Hypothesis
from qifusion.decode.text import words_from_tokens
from qifusion.errors import DataError, UserError

DEFAULT_STREAMING_CHUNK = 16
PIECE_SECONDS = 0.1
LONG_AUDIO_SECONDS = 60.0
MIN_SECONDS = 0.1


def transcribe_files(
    *,
    model_dir: Path,
    files: list[Path],
    mode: str = "attention_rescoring",
    chunk_size: int = -1,
    left_chunks: int = -1,
    streaming: bool = False,
    backend: str = "torch",
    out: IO[str] = sys.stdout,
    long_audio_s: float = LONG_AUDIO_SECONDS,
    batch_streams: int = 8,
    decode_options: dict[str, Any] | None = None,
) -> int:
    """Transcribe ``files`` and write one JSON line per file to ``out``; return the number that failed.

    Each line is ``{"file", "text", "accent", "accent_prob", "duration", "segments"}`` or
    ``{"file", "error"}``.
    """
    stream_chunk = chunk_size
    if streaming and chunk_size <= 0:
        stream_chunk = DEFAULT_STREAMING_CHUNK
        print(f"qifusion transcribe: --streaming needs a chunk size; using --chunk-size {stream_chunk}",
              file=sys.stderr)
    rec = Recognizer.from_model_dir(
        model_dir, chunk_size=stream_chunk if stream_chunk > 0 else DEFAULT_STREAMING_CHUNK,
        left_chunks=left_chunks, mode=mode, rescore=mode == "attention_rescoring", backend=backend,
        **{k: v for k, v in (decode_options or {}).items() if v is not None},
    )
    min_s = max(MIN_SECONDS, (rec.context + 1) * 0.01 + 0.015)
    failed = 0
    pending: list[tuple[Path, int, np.ndarray]] = []  # short files waiting for a streaming batch

    def flush() -> None:
        for rec_line in _stream_batch(rec, pending):
            _emit(out, rec_line)
        pending.clear()

    for path in files:
        try:
            sr, duration = _check(path, min_s)
        except DataError as e:
            failed += 1
            flush()
            _emit(out, {"file": str(path), "error": str(e)})
            continue
        try:
            if duration > long_audio_s:
                flush()
                _emit(out, _long(rec, path))
            elif streaming:
                pending.append((path, sr, read_audio(path, target_sr=sr)))
                if len(pending) >= batch_streams:
                    flush()
            else:
                samples = read_audio(path, target_sr=sr)
                _emit(out, _offline(rec, path, sr, samples, chunk_size=chunk_size, left_chunks=left_chunks))
        except DataError as e:
            failed += 1
            flush()
            _emit(out, {"file": str(path), "error": str(e)})
    flush()
    return failed


def _emit(out: IO[str], record: dict[str, Any]) -> None:
    out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()


def _check(path: Path, min_s: float) -> tuple[int, float]:
    """(sample rate, duration) of a readable, non-empty, long-enough file, else DataError."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    sr, duration = audio_info(str(path))
    if duration <= 0:
        raise DataError(f"{path}: empty audio (0 samples)")
    if duration < min_s:
        raise DataError(f"{path}: too short ({duration:.3f} s; at least {min_s:.2f} s is needed)")
    return sr, duration


def _record(path: Path, duration: float, segments: list[Segment], accent: str | None, prob: float) -> dict:
    return {
        "file": str(path),
        "text": " ".join(s.text for s in segments if s.text),
        "accent": accent,
        "accent_prob": round(float(prob), 4),
        "duration": round(duration, 3),
        "segments": [s.to_dict() for s in segments],
    }


def _single(rec: Recognizer, path: Path, duration: float, hyp: Hypothesis, accent: str | None,
            prob: float) -> dict:
    tokens = [rec.tokenizer.id2token(i) for i in hyp.tokens]
    times = [t * rec.frame_shift for t in hyp.times]
    seg = Segment(start=0.0, end=duration, text=rec.tokenizer.decode(hyp.tokens), tokens=tokens,
                  timestamps=times, words=words_from_tokens(tokens, times, frame_shift=rec.frame_shift),
                  accent=accent, accent_prob=prob)
    return _record(path, duration, [seg], accent, prob)


@torch.inference_mode()
def _offline(rec: Recognizer, path: Path, sr: int, samples: np.ndarray, *, chunk_size: int,
             left_chunks: int) -> dict:
    """Chunk-masked full forward + search functions (the non-streaming path)."""
    from qifusion.decode.offline import decode_features

    feats = compute_fbank(samples, sample_rate=sr, num_mel_bins=rec.num_mel_bins)
    hyp, accent, prob = decode_features(rec, feats, chunk_size=chunk_size, left_chunks=left_chunks)
    return _single(rec, path, samples.shape[0] / sr, hyp, accent, prob)


def _stream_batch(rec: Recognizer, items: list[tuple[Path, int, np.ndarray]]) -> list[dict]:
    """Feed several files in 100 ms pieces through streams decoded together; records in order."""
    streams = [rec.create_stream() for _ in items]
    pos = [0] * len(items)
    while True:
        active = False
        for i, (_, sr, samples) in enumerate(items):
            s = streams[i]
            if s.is_input_finished:
                continue
            step = max(1, round(PIECE_SECONDS * sr))
            s.accept_waveform(sr, samples[pos[i]:pos[i] + step])
            pos[i] += step
            if pos[i] >= samples.shape[0]:
                s.input_finished()
            active = True
        while True:
            ready = [s for s in streams if rec.is_ready(s)]
            if not ready:
                break
            rec.decode_streams(ready)
        if not active:
            break
    out = []
    for (path, sr, samples), s in zip(items, streams):
        r = s.result
        seg = Segment(start=0.0, end=samples.shape[0] / sr, text=r.text, tokens=r.tokens,
                      timestamps=r.timestamps, words=r.words, accent=r.accent, accent_prob=r.accent_prob)
        out.append(_record(path, samples.shape[0] / sr, [seg], r.accent, r.accent_prob))
    return out


def _long(rec: Recognizer, path: Path) -> dict:
    """Long file: streaming with endpointing into segments (bounded memory)."""
    res = decode_long(rec, iter_audio_blocks(path))
    if not math.isfinite(res.duration) or res.duration <= 0:
        raise UserError(f"{path}: empty audio")
    return _record(path, res.duration, res.segments, res.accent, res.accent_prob)
