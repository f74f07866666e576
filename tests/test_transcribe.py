"""`qifusion transcribe`: JSON lines in input order, bad files reported, streaming == non-streaming."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qifusion.cli import main
from qifusion.decode.transcribe import transcribe_files
from tests.recognizer_helpers import make_random_model_dir, noise_utterance


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    d = tmp_path_factory.mktemp("tx")
    model = make_random_model_dir(d / "model", seed=1)
    a = d / "a.wav"
    sf.write(a, noise_utterance(2.3, sr=16000, seed=1), 16000, subtype="PCM_16")
    b = d / "b_stereo_44k.flac"
    x = noise_utterance(1.7, sr=44100, seed=2)
    sf.write(b, np.stack([x, 0.5 * x], axis=1), 44100)
    c = d / "c_8k.ogg"
    sf.write(c, noise_utterance(3.1, sr=8000, seed=3), 8000, format="OGG", subtype="VORBIS")
    corrupt = d / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage" * 10)
    empty = d / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    short = d / "short.wav"
    sf.write(short, noise_utterance(0.03, sr=16000, seed=4), 16000)
    return model, [a, corrupt, b, empty, c, short, d / "missing.wav"]


def _run(model: Path, paths: list[Path], **kw: object) -> tuple[int, list[dict]]:
    out = io.StringIO()
    n = transcribe_files(model_dir=model, files=paths, out=out, backend="torch", **kw)  # type: ignore[arg-type]
    return n, [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("mode", ["ctc_greedy", "attention_rescoring"])
def test_streaming_equals_offline_and_bad_files(files: tuple[Path, list[Path]], mode: str) -> None:
    model, paths = files
    n_off, off = _run(model, paths, mode=mode, chunk_size=16, left_chunks=-1, streaming=False)
    n_str, stm = _run(model, paths, mode=mode, chunk_size=16, left_chunks=-1, streaming=True)
    assert n_off == n_str == 4
    assert [r["file"] for r in off] == [str(p) for p in paths] == [r["file"] for r in stm]
    errors = {Path(r["file"]).name: r["error"] for r in off if "error" in r}
    assert set(errors) == {"corrupt.wav", "empty.wav", "short.wav", "missing.wav"}
    assert "unreadable audio" in errors["corrupt.wav"]
    assert "empty audio" in errors["empty.wav"]
    assert "too short" in errors["short.wav"]
    assert "not found" in errors["missing.wav"]
    good = [(o, s) for o, s in zip(off, stm) if "error" not in o]
    assert len(good) == 3
    for o, s in good:
        assert set(o) == {"file", "text", "accent", "accent_prob", "accent_id", "bandwidth", "duration",
                          "segments"}
        assert o["text"] and o["text"] == s["text"]
        assert o["accent"] == s["accent"] and o["accent_prob"] == pytest.approx(s["accent_prob"], abs=1e-3)
        assert o["duration"] == s["duration"]
        assert len(o["segments"]) == 1 and o["segments"][0]["text"] == o["text"]
    assert [o["duration"] for o, _ in good] == pytest.approx([2.3, 1.7, 3.1], abs=1e-3)
    assert [o["bandwidth"]["narrowband"] for o, _ in good] == [False, False, True]  # c_8k.ogg is 8 kHz


def test_empty_file_and_directory_say_what_is_wrong(files: tuple[Path, list[Path]], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    model, _ = files
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    rc = main(["transcribe", "--model", str(model), str(zero), str(tmp_path)])
    errors = [json.loads(x)["error"] for x in capsys.readouterr().out.splitlines()]
    assert rc == 1
    assert errors[0] == f"{zero}: file is empty (0 bytes)"
    assert errors[1] == (f"{tmp_path}: is a directory, not an audio file "
                         f"(pass the files, e.g. {tmp_path}/*.wav)")


def test_no_double_spaces_in_hypotheses() -> None:
    from qifusion.data.tokenizer import SPACE, Tokenizer

    tok = Tokenizer.build(["the cat"])
    ids = [tok.token2id(u) for u in [SPACE, "t", SPACE, SPACE, "h", SPACE, SPACE, SPACE, "e", SPACE]]
    assert tok.decode(ids) == "t h e"


def test_cli_exit_code_and_full_context(
    files: tuple[Path, list[Path]], capsys: pytest.CaptureFixture
) -> None:
    model, paths = files
    rc = main(["transcribe", "--model", str(model), "--mode", "ctc_greedy", str(paths[0]), str(paths[2])])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 0 and len(lines) == 2 and all(x["text"] for x in lines)
    rc = main(["transcribe", "--model", str(model), str(paths[1]), str(paths[0])])
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 1 and "error" in lines[0] and lines[1]["text"]


def test_long_file_goes_through_segments(files: tuple[Path, list[Path]], tmp_path: Path) -> None:
    model, _paths = files
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([noise_utterance(3.0, sr=16000, seed=i) for i in range(4)]), 16000)
    n, recs = _run(model, [long], mode="ctc_greedy", chunk_size=8, left_chunks=4, streaming=False,
                   long_audio_s=5.0)
    assert n == 0
    segs = recs[0]["segments"]
    assert recs[0]["duration"] == pytest.approx(12.0, abs=1e-3)
    assert len(segs) >= 1 and recs[0]["text"] == " ".join(s["text"] for s in segs)
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in itertools.pairwise(segs))
