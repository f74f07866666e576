"""read_audio: formats, pipes, segments, resampling, downmix and bad-input messages."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qifusion.data.audio import audio_info, read_audio
from qifusion.errors import DataError


def _tone(n: int, sr: int = 16000, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)


def test_wav_and_flac_roundtrip(tmp_path: Path) -> None:
    x = _tone(16000)
    for ext in ("wav", "flac"):
        p = tmp_path / f"a.{ext}"
        sf.write(p, x, 16000, subtype="PCM_16")
        y = read_audio(p)
        assert y.dtype == np.float32 and y.shape == (16000,)
        assert np.max(np.abs(y - x)) < 1e-4


def test_segment_start_end(tmp_path: Path) -> None:
    x = np.arange(32000, dtype=np.float32) / 32000 - 0.5
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    y = read_audio(tmp_path / "a.wav", start=0.5, end=1.25)
    assert y.shape == (12000,)
    assert y[0] == pytest.approx(x[8000]) and y[-1] == pytest.approx(x[19999])
    assert read_audio(tmp_path / "a.wav", start=1.5).shape == (8000,)


def test_pipe_command(tmp_path: Path) -> None:
    x = _tone(8000)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="PCM_16")
    y = read_audio(f"cat {tmp_path / 'a.wav'} |", utt_id="u1")
    assert y.shape == (8000,) and np.max(np.abs(y - x)) < 1e-4
    assert audio_info(f"cat {tmp_path / 'a.wav'} |") == (16000, 0.5)
    # segment of a piped recording
    assert read_audio(f"cat {tmp_path / 'a.wav'} |", start=0.25).shape == (4000,)


def test_pipe_failure_names_utterance_and_command() -> None:
    with pytest.raises(DataError, match=r"utterance 'u9' \(sh -c 'echo boom >&2; exit 3' \|\).*exit 3.*boom"):
        read_audio("sh -c 'echo boom >&2; exit 3' |", utt_id="u9")


def test_resample_8k_to_16k(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", _tone(8000, sr=8000), 8000, subtype="PCM_16")
    y = read_audio(tmp_path / "a.wav")
    assert y.shape == (16000,)
    # still a 440 Hz tone after resampling: spectral peak at 440 Hz (1 Hz bins)
    assert abs(int(np.argmax(np.abs(np.fft.rfft(y)))) - 440) <= 1


def test_stereo_downmix(tmp_path: Path) -> None:
    left = _tone(4000, amp=0.8)
    sf.write(tmp_path / "s.wav", np.stack([left, np.zeros_like(left)], 1), 16000, subtype="FLOAT")
    y = read_audio(tmp_path / "s.wav")
    assert y.shape == (4000,)
    assert np.allclose(y, left / 2, atol=1e-6)


def test_missing_file_message(tmp_path: Path) -> None:
    p = tmp_path / "nope.wav"
    with pytest.raises(DataError, match=rf"utterance 'u1' \({p}\): file not found"):
        read_audio(p, utt_id="u1")


def test_corrupt_file_message(tmp_path: Path) -> None:
    p = tmp_path / "bad.wav"
    p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(DataError, match=rf"utterance 'u2' \({p}\): unreadable audio"):
        read_audio(p, utt_id="u2")


def test_empty_audio_message(tmp_path: Path) -> None:
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DataError, match=rf"utterance 'u3' \({p}\): empty audio"):
        read_audio(p, utt_id="u3")


def test_segment_past_end_message(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", _tone(1600), 16000)
    with pytest.raises(DataError, match=r"utterance 'u4'.*start 5.000 s is past the end \(0.100 s\)"):
        read_audio(tmp_path / "a.wav", start=5.0, utt_id="u4")
