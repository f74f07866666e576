"""Read audio as float32 mono samples in [-1, 1]: files (soundfile) or Kaldi pipe commands.

A Kaldi ``wav.scp`` value ending in ``|`` is a shell command writing audio (usually wav) to stdout;
it is run with ``subprocess`` through the shell and its stdout is decoded by soundfile.
Resampling uses soxr (high quality); multi-channel audio is averaged to mono.
Every failure raises :class:`~qifusion.errors.DataError` naming the utterance, the file and the reason.
"""

from __future__ import annotations

import io
import os
import subprocess

import numpy as np
import soundfile as sf
import soxr

from qifusion.errors import DataError

PIPE_TIMEOUT_S = 600.0
MIN_SAMPLE_RATE = 4000  # below this nothing of speech is left (and resampling x4000 would blow up)
MAX_SAMPLE_RATE = 768000


def check_sample_rate(sr: int, where: str) -> None:
    """DataError unless ``MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE`` (a lying header, or not audio)."""
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise DataError(f"{where}: sample rate {sr} Hz is not supported "
                        f"({MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")


def _where(source: str, utt_id: str | None) -> str:
    return f"utterance '{utt_id}' ({source})" if utt_id else f"audio '{source}'"


def is_pipe(source: str) -> bool:
    """True for a Kaldi pipe command (``... |``)."""
    return source.rstrip().endswith("|")


def run_pipe(command: str, *, utt_id: str | None = None) -> bytes:
    """Run a Kaldi ``wav.scp`` pipe command (``... |``) and return its stdout bytes."""
    cmd = command.rstrip()
    if cmd.endswith("|"):
        cmd = cmd[:-1]
    try:
        proc = subprocess.run(cmd, shell=True, capture_output=True, timeout=PIPE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        where = _where(command, utt_id)
        raise DataError(f"{where}: pipe command timed out after {PIPE_TIMEOUT_S:.0f} s") from e
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        tail = err[-1] if err else "no error output"
        raise DataError(f"{_where(command, utt_id)}: pipe command failed (exit {proc.returncode}): {tail}")
    if not proc.stdout:
        raise DataError(f"{_where(command, utt_id)}: pipe command wrote no audio")
    return proc.stdout


def audio_info(source: str, *, utt_id: str | None = None) -> tuple[int, float]:
    """(sample rate, duration in seconds) of a file, without decoding it (pipes are run)."""
    try:
        if is_pipe(source):
            info = sf.info(io.BytesIO(run_pipe(source, utt_id=utt_id)))
        else:
            info = sf.info(source)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{_where(source, utt_id)}: {_reason(source, e)}") from e
    check_sample_rate(int(info.samplerate), _where(source, utt_id))
    return int(info.samplerate), float(info.duration)


def _reason(source: str, e: Exception) -> str:
    if not is_pipe(source):
        if not os.path.exists(source):
            return "file not found"
        if os.path.isdir(source):
            return "is a directory, not an audio file"
        if os.path.getsize(source) == 0:
            return "file is empty (0 bytes)"
    msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    msg = msg.replace(f"Error opening {source!r}: ", "")  # soundfile repeats the path
    return f"unreadable audio ({msg})"


def read_audio(
    source: str | os.PathLike[str],
    *,
    start: float = 0.0,
    end: float | None = None,
    target_sr: int = 16000,
    utt_id: str | None = None,
) -> np.ndarray:
    """Read ``source`` (path or Kaldi pipe) from ``start`` to ``end`` seconds; return (N,) float32.

    The result is mono (channels averaged), at ``target_sr`` Hz, in [-1, 1]. Empty audio (or a
    segment past the end of the file), a missing or corrupt file, or a failing pipe raise DataError
    naming the utterance and file.
    """
    source = os.fspath(source)
    where = _where(source, utt_id)
    if end is not None and end <= start:
        raise DataError(f"{where}: segment end {end} is not after start {start}")
    try:
        if is_pipe(source):
            f = sf.SoundFile(io.BytesIO(run_pipe(source, utt_id=utt_id)))
        else:
            f = sf.SoundFile(source)
        with f:
            sr = int(f.samplerate)
            check_sample_rate(sr, where)
            first = round(start * sr)
            if first > 0:
                if first >= f.frames:
                    raise DataError(f"{where}: segment start {start:.3f} s is past the end "
                                    f"({f.frames / sr:.3f} s)")
                f.seek(first)
            n = -1 if end is None else max(0, round(end * sr) - first)
            data = f.read(frames=n, dtype="float32", always_2d=True)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{where}: {_reason(source, e)}") from e
    if data.shape[0] == 0:
        raise DataError(f"{where}: empty audio (0 samples)")
    samples = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(samples)):
        raise DataError(f"{where}: audio contains NaN or infinite samples")
    if sr != target_sr:
        samples = soxr.resample(samples, sr, target_sr, quality="HQ")
        if samples.size == 0:
            raise DataError(f"{where}: empty audio after resampling {sr} -> {target_sr} Hz")
    samples = np.clip(samples, -1.0, 1.0)
    return np.ascontiguousarray(samples, dtype=np.float32)


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int = 16000) -> None:
    """Write (N,) float samples in [-1, 1] as a 16-bit PCM wav (not atomic; for prepared corpora/tests)."""
    sf.write(os.fspath(path), np.asarray(samples, dtype=np.float32), sample_rate, subtype="PCM_16")
