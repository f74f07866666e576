"""Out-of-domain audio with the shipped model: silence and non-speech give empty text (speech gate),
narrowband input is detected and reported, long audio has no segments made of silence."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qifusion.data.bandwidth import analyse_bandwidth
from qifusion.data.manifest import load_data_dir
from qifusion.decode.transcribe import transcribe_files

MODEL = Path(__file__).resolve().parent.parent / "models" / "accents-en-qifusion"
NONSPEECH = {  # sox effects; each of these came out as a word ("the", "we", ...) before the gate
    "silence": "trim 0 3",
    "dither": "trim 0 3 dither -s",
    "hum_50Hz": "synth 3 sine 50 vol -30dB",
    "chord": "synth 3 sine 261.6 sine 329.6 sine 392 remix - vol -10dB",
    "brown_noise": "synth 3 brownnoise vol -20dB",
    "sweep": "synth 3 sine 100-4000 vol -15dB",
}


def sox(out: Path, *args: str) -> Path:
    """``sox INPUT OUT EFFECTS...``; ``args`` = input args, then one string of output options/effects."""
    opts = args[-1].split()
    if args[0] == "-n":  # synthesised: the rate/bits come before the output name
        cmd = ["sox", *args[:-1], str(out), *opts]
    else:
        cmd = ["sox", *args[:-1], *opts, str(out)]
    subprocess.run(cmd, check=True)
    return out


def _run(files: list[Path], **kw: object) -> list[dict]:
    out = io.StringIO()
    transcribe_files(model_dir=MODEL, files=files, out=out, **kw)  # type: ignore[arg-type]
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.fixture(scope="module")
def speech(synth_corpus: Path) -> Path:
    return Path(load_data_dir(synth_corpus / "test")[0].audio)


@pytest.mark.parametrize("streaming", [False, True])
def test_silence_and_nonspeech_give_empty_text(tmp_path: Path, speech: Path, streaming: bool) -> None:
    files = [sox(tmp_path / f"{n}.wav", "-n", "-r", "16000", "-b", "16", fx) for n, fx in NONSPEECH.items()]
    recs = _run([*files, speech], streaming=streaming, chunk_size=16)
    texts = {Path(r["file"]).stem: r["text"] for r in recs}
    assert {k: v for k, v in texts.items() if k in NONSPEECH} == dict.fromkeys(NONSPEECH, "")
    assert all(r["segments"] == [] and r["accent"] is None for r in recs[:-1])
    assert len(texts[speech.stem].split()) >= 2  # real speech still transcribes


def test_long_audio_has_no_silence_segments(tmp_path: Path, speech: Path) -> None:
    x, sr = sf.read(speech, dtype="float32")
    gap = np.zeros(6 * sr, dtype=np.float32)
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([gap, x, gap, gap, x, gap]), sr)
    (rec,) = _run([long], long_audio_s=10.0, chunk_size=16)
    assert rec["duration"] > 24 and rec["text"]
    assert 1 <= len(rec["segments"]) <= 2 and all(len(s["text"].split()) >= 2 for s in rec["segments"])


def test_narrowband_is_detected_and_reported(tmp_path: Path, speech: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    nb8 = sox(tmp_path / "phone_8k.wav", str(speech), "-r 8000")
    nb16 = sox(tmp_path / "phone_upsampled_16k.wav", str(nb8), "-r 16000")  # 16 kHz file, 4 kHz content
    x, sr = sf.read(speech, dtype="float32")
    assert not analyse_bandwidth(x, sr).narrowband
    y, sr16 = sf.read(nb16, dtype="float32")
    band = analyse_bandwidth(y, sr16)
    assert band.narrowband and band.hf_ratio_db < -50 and "above 4 kHz" in band.reason
    recs = _run([speech, nb8, nb16])
    assert [r["bandwidth"]["narrowband"] for r in recs] == [False, True, True]
    assert recs[1]["bandwidth"]["input_rate"] == 8000 and "below 16 kHz" in recs[1]["bandwidth"]["reason"]
    err = capsys.readouterr().err
    assert f"warning: {nb8} is narrowband" in err and f"warning: {nb16} is narrowband" in err
    assert f"warning: {speech} is" not in err
