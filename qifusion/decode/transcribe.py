"""``qifusion transcribe``: audio files -> one JSON line per file, in input order.

Two paths that give the same transcripts for the same chunk size / left chunks / mode:

* default: the chunk-masked full forward (``model.encode``) followed by the search functions;
* ``streaming=True``: the audio is fed in 100 ms pieces through the streaming
  :class:`~qifusion.decode.recognizer.Recognizer` (several files are decoded together in one batch).

Files longer than ``long_audio_s`` are decoded by :mod:`qifusion.decode.longform` in both paths
(streaming with endpointing, bounded memory), giving several segments. A file that cannot be read, is
empty or is too short gives ``{"file", "error"}`` and the others are still transcribed.

Every record says how far its accent can be trusted (``accent_id``, from the model dir's
``aid_calibration.json``, see :mod:`qifusion.eval.calibration`) and whether the audio is narrowband
(``bandwidth``, :mod:`qifusion.data.bandwidth`; also warned on stderr). Silence and non-speech give
an empty ``text`` (the speech gate, :mod:`qifusion.decode.gate`).
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
from qifusion.data.bandwidth import Bandwidth, analyse_bandwidth
from qifusion.data.features import compute_fbank
from qifusion.decode.backend import default_chunk_size
from qifusion.decode.longform import decode_long, iter_audio_blocks
from qifusion.decode.options import DEFAULT_MODE
from qifusion.decode.recognizer import Recognizer
from qifusion.decode.stream import Segment
from qifusion.decode.streaming_search import Hypothesis
from qifusion.decode.text import words_from_tokens
from qifusion.errors import DataError, UserError
from qifusion.eval.calibration import AccentView

PIECE_SECONDS = 0.1
LONG_AUDIO_SECONDS = 60.0
MIN_SECONDS = 0.1


def transcribe_files(
    *,
    model_dir: Path,
    files: list[Path],
    mode: str = DEFAULT_MODE,
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

    Each line is ``{"file", "text", "accent", "accent_prob", "accent_id", "bandwidth", "duration",
    "segments"}`` or ``{"file", "error"}``.
    """
    stream_chunk = chunk_size if chunk_size > 0 else default_chunk_size(model_dir, backend)
    if streaming and chunk_size <= 0 and backend == "torch":
        print(f"qifusion transcribe: --streaming without --chunk-size: using --chunk-size {stream_chunk}",
              file=sys.stderr)
    rec = Recognizer.from_model_dir(
        model_dir, chunk_size=stream_chunk, left_chunks=left_chunks, mode=mode,
        rescore=False, backend=backend,  # the mode as given (ctc_prefix_beam: no rescoring)
        **{k: v for k, v in (decode_options or {}).items() if v is not None},
    )
    view = AccentView.for_model_dir(model_dir)
    print(f"qifusion transcribe: {view.note}", file=sys.stderr)
    min_s = max(MIN_SECONDS, (rec.geometry.context + 1) * 0.01 + 0.015)
    failed = 0
    pending: list[tuple[Path, int, np.ndarray, Bandwidth]] = []  # short files waiting for a streaming batch

    def emit(record: dict[str, Any], band: Bandwidth) -> None:
        _emit(out, _present(record, view, band))

    def fail(path: Path, e: Exception) -> None:
        nonlocal failed
        failed += 1
        if isinstance(e, UserError):
            msg = str(e)
        else:  # a bug must not end the other files' transcription or show a traceback
            msg = f"internal error while decoding ({type(e).__name__}: {e}); please report it"
        _emit(out, {"file": str(path), "error": _one_line(path, msg)})

    def flush() -> None:
        if not pending:
            return
        try:
            records = _stream_batch(rec, [p[:3] for p in pending])
        except Exception as e:
            for p in pending:
                fail(p[0], e)
        else:
            for (_, _, _, band), rec_line in zip(pending, records):
                emit(rec_line, band)
        pending.clear()

    for path in files:
        try:
            sr, duration = _check(path, min_s)
        except DataError as e:
            flush()
            fail(path, e)
            continue
        try:
            if duration > long_audio_s:
                flush()
                band = _bandwidth(path, read_audio(path, end=min(duration, 30.0), target_sr=sr), sr)
                emit(_long(rec, path), band)  # bandwidth judged on the first 30 s
                continue
            samples = read_audio(path, target_sr=sr)
            band = _bandwidth(path, samples, sr)
            if streaming:
                pending.append((path, sr, samples, band))
                if len(pending) >= batch_streams:
                    flush()
            else:
                emit(_offline(rec, path, sr, samples, chunk_size=chunk_size, left_chunks=left_chunks), band)
        except Exception as e:
            flush()
            fail(path, e)
    flush()
    return failed


def _one_line(path: Path, msg: str) -> str:
    """The error message on one line, starting with the file name."""
    msg = " ".join(msg.split())
    for prefix in (f"audio '{path}': ", f"{path}: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return f"{path}: {msg}"


def _emit(out: IO[str], record: dict[str, Any]) -> None:
    out.write(json.dumps(record, ensure_ascii=False) + "\n")
    out.flush()


def _bandwidth(path: Path, samples: np.ndarray, sr: int) -> Bandwidth:
    """Narrowband check of a file's samples at its own rate ``sr``; warns on stderr."""
    band = analyse_bandwidth(samples, sr, input_rate=sr)
    if band.narrowband:
        print(f"qifusion transcribe: warning: {path} is narrowband ({band.reason}); the model was trained "
              "on 16 kHz wideband speech, expect many errors", file=sys.stderr)
    return band


def _present(record: dict[str, Any], view: AccentView, band: Bandwidth) -> dict[str, Any]:
    """The user-facing record: accents through the calibration view, bandwidth added."""
    probs = record.pop("_accent_probs", {})
    accent, prob = view.present(probs)
    for seg, seg_probs in zip(record["segments"], record.pop("_segment_probs", [])):
        seg["accent"], seg["accent_prob"] = view.present(seg_probs)
    out = {"file": record["file"], "text": record["text"], "accent": accent, "accent_prob": prob,
           "accent_id": view.summary(), "bandwidth": band.to_dict()}
    out.update({k: record[k] for k in ("duration", "segments")})
    return out


def _check(path: Path, min_s: float) -> tuple[int, float]:
    """(sample rate, duration) of a readable, non-empty, long-enough file, else DataError."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not an audio file (pass the files, e.g. {path}/*.wav)")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes)")
    sr, duration = audio_info(str(path))
    if duration <= 0:
        raise DataError(f"{path}: empty audio (0 samples)")
    if duration < min_s:
        raise DataError(f"{path}: too short ({duration:.3f} s; at least {min_s:.2f} s is needed)")
    return sr, duration


def _record(path: Path, duration: float, segments: list[Segment], probs: dict[str, float]) -> dict:
    """The raw record; ``_accent_probs`` / ``_segment_probs`` (raw posteriors) are consumed by _present."""
    return {
        "file": str(path),
        "text": " ".join(s.text for s in segments if s.text),
        "duration": round(duration, 3),
        "segments": [s.to_dict() for s in segments if s.text],
        "_accent_probs": probs,
        "_segment_probs": [s.accent_probs for s in segments if s.text],
    }


def _single(rec: Recognizer, path: Path, duration: float, hyp: Hypothesis, accent: str | None,
            prob: float, probs: dict[str, float]) -> dict:
    tokens = [rec.tokenizer.id2token(i) for i in hyp.tokens]
    times = [t * rec.frame_shift for t in hyp.times]
    seg = Segment(start=0.0, end=duration, text=rec.tokenizer.decode(hyp.tokens), tokens=tokens,
                  timestamps=times, words=words_from_tokens(tokens, times, frame_shift=rec.frame_shift),
                  accent=accent, accent_prob=prob, accent_probs=probs)
    return _record(path, duration, [seg], probs)


@torch.inference_mode()
def _offline(rec: Recognizer, path: Path, sr: int, samples: np.ndarray, *, chunk_size: int,
             left_chunks: int) -> dict:
    """Chunk-masked full forward + search functions (the non-streaming path)."""
    from qifusion.decode.offline import decode_features

    feats = compute_fbank(samples, sample_rate=sr, num_mel_bins=rec.num_mel_bins)
    probs: dict[str, float] = {}
    hyp, accent, prob = decode_features(rec, feats, chunk_size=chunk_size, left_chunks=left_chunks,
                                        accent_probs=probs)
    return _single(rec, path, samples.shape[0] / sr, hyp, accent, prob, probs)


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
                      timestamps=r.timestamps, words=r.words, accent=r.accent, accent_prob=r.accent_prob,
                      accent_probs=r.accent_probs)
        out.append(_record(path, samples.shape[0] / sr, [seg], r.accent_probs))
    return out


def _long(rec: Recognizer, path: Path) -> dict:
    """Long file: streaming with endpointing into segments (bounded memory)."""
    res = decode_long(rec, iter_audio_blocks(path))
    if not math.isfinite(res.duration) or res.duration <= 0:
        raise UserError(f"{path}: empty audio")
    return _record(path, res.duration, res.segments, res.accent_probs)
