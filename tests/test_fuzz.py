"""Bounded fuzzing of ``transcribe`` and the WebSocket server (seeded, a few seconds).

Malformed input of every kind must give a clear, one-line error (or a normal result), never a crash or
a traceback; the server must keep serving other clients and free every session. The case counts are
printed (``pytest -s``) and asserted, so the suite reports how many cases ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qifusion.cli import main
from qifusion.decode.transcribe import transcribe_files
from tests.recognizer_helpers import make_random_model_dir, noise_utterance

SEED = 20


def _wav_bytes(x: np.ndarray, sr: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype=subtype, format=fmt)
    return buf.getvalue()


def _header(*, sr: int = 16000, channels: int = 1, bits: int = 16, data_bytes: int = 32000,
            riff_bytes: int | None = None, fmt_tag: int = 1) -> bytes:
    """A canonical 44-byte PCM wav header whose fields may lie."""
    block = channels * bits // 8
    riff = 36 + data_bytes if riff_bytes is None else riff_bytes
    return (b"RIFF" + struct.pack("<I", riff & 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<I", 16)
            + struct.pack("<HHIIHH", fmt_tag, channels, sr & 0xFFFFFFFF, (sr * block) & 0xFFFFFFFF,
                          block & 0xFFFF, bits) + b"data" + struct.pack("<I", data_bytes & 0xFFFFFFFF))


def fuzz_files(d: Path, rng: np.random.Generator) -> list[Path]:
    """Every kind of bad (and some odd but valid) audio file; returns their paths."""
    good = _wav_bytes(noise_utterance(1.0, sr=16000, seed=1), 16000)
    flac = _wav_bytes(noise_utterance(1.0, sr=16000, seed=2), 16000, subtype="PCM_16", fmt="FLAC")
    pcm = (rng.standard_normal(16000) * 3000).astype("<i2").tobytes()
    cases: dict[str, bytes] = {"zero_bytes.wav": b"", "header_only.wav": _wav_bytes(np.zeros(0), 16000)}
    for i in range(8):  # random bytes, some behind a real magic number
        magic = [b"", b"RIFF", b"fLaC", b"OggS", b"RIFF\x00\x00\x00\x00WAVE"][i % 5]
        cases[f"random_{i}.wav"] = magic + rng.bytes(int(rng.integers(0, 6000)))
    for i, cut in enumerate(sorted(rng.integers(1, len(good), 6))):  # truncated wav / flac
        cases[f"truncated_wav_{i}.wav"] = good[:cut]
        cases[f"truncated_flac_{i}.flac"] = flac[: int(cut * len(flac) / len(good))]
    lies = {"data_size_huge": {"data_bytes": 0x7FFFFFF0}, "data_size_zero": {"data_bytes": 0},
            "riff_size_zero": {"riff_bytes": 0}, "sr_zero": {"sr": 0}, "sr_one": {"sr": 1},
            "sr_huge": {"sr": 0x7FFFFFFF}, "channels_zero": {"channels": 0},
            "channels_many": {"channels": 4096},
            "bits_zero": {"bits": 0}, "bits_odd": {"bits": 13}, "format_tag_unknown": {"fmt_tag": 0x1234},
            "float_tag_16bit": {"fmt_tag": 3}}
    for name, kw in lies.items():  # lying headers before real PCM
        cases[f"lying_{name}.wav"] = _header(**kw) + pcm
    # lying FLAC STREAMINFO (bytes 18-25: 20-bit rate, 3-bit channels-1, 5-bit bits-1, 36-bit total samples)
    info = int.from_bytes(flac[18:26], "big")
    for name, (shift, width, value) in {"rate_1Hz": (44, 20, 1), "rate_zero": (44, 20, 0),
                                        "channels_8": (41, 3, 7), "total_samples_huge": (0, 36, 2**36 - 1),
                                        "bits_32": (36, 5, 31)}.items():
        mask = ((1 << width) - 1) << shift
        lied = (info & ~mask) | (value << shift)
        cases[f"lying_flac_{name}.flac"] = flac[:18] + lied.to_bytes(8, "big") + flac[26:]
    arrays = {  # valid files with extreme content or rates
        "rate_1Hz.wav": (rng.standard_normal(40) * 0.1, 1),
        "rate_100Hz.wav": (rng.standard_normal(300) * 0.1, 100),
        "rate_4kHz.wav": (noise_utterance(1.0, sr=4000, seed=3), 4000),
        "rate_384kHz.wav": (noise_utterance(0.3, sr=384000, seed=4), 384000),
        "one_sample.wav": (np.array([0.5]), 16000),
        "full_scale_square.wav": (np.sign(np.sin(np.arange(16000) / 5.0)), 16000),
    }
    for name, (x, sr) in arrays.items():
        cases[name] = _wav_bytes(np.asarray(x, dtype=np.float32), sr)
    bad = noise_utterance(1.0, sr=16000, seed=5)
    for name, value in {"nan": np.nan, "inf": np.inf, "minus_inf": -np.inf, "huge": 1e30}.items():
        x = bad.copy()
        x[::97] = value
        cases[f"float_{name}.wav"] = _wav_bytes(x, 16000, subtype="FLOAT")
    long = noise_utterance(7.0, sr=16000, seed=6)  # the long-audio path (long_audio_s=5 below)
    cases["long.wav"] = _wav_bytes(long, 16000)
    long[50000:50100] = np.nan
    cases["long_nan.wav"] = _wav_bytes(long, 16000, subtype="FLOAT")
    long[50000:50100] = 0.0
    cases["long_lying_header.wav"] = _header(data_bytes=0x7FFFFFF0) + (long * 3000).astype("<i2").tobytes()
    paths = []
    for name, data in cases.items():
        (d / name).write_bytes(data)
        paths.append(d / name)
    (d / "a_directory.wav").mkdir()
    return [*paths, d / "a_directory.wav", d / "missing.wav"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_model_dir(tmp_path_factory.mktemp("fuzz") / "model", seed=4)


@pytest.mark.parametrize("streaming", [False, True])
def test_transcribe_survives_malformed_audio(model: Path, tmp_path: Path, streaming: bool,
                                            capsys: pytest.CaptureFixture) -> None:
    files = fuzz_files(tmp_path, np.random.default_rng(SEED))
    out = io.StringIO()
    failed = transcribe_files(model_dir=model, files=files, out=out, mode="ctc_greedy", chunk_size=8,
                              streaming=streaming, long_audio_s=5.0)
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["file"] for r in recs] == [str(f) for f in files]
    errors = {Path(r["file"]).name: r["error"] for r in recs if "error" in r}
    assert failed == len(errors) >= 30
    for name, msg in errors.items():
        assert msg.startswith(str(files[0].parent / name)) and "\n" not in msg and "Traceback" not in msg
        assert "internal error while decoding" not in msg, msg
    assert "file is empty" in errors["zero_bytes.wav"] and "is a directory" in errors["a_directory.wav"]
    assert "NaN or infinite" in errors["float_nan.wav"] and "NaN or infinite" in errors["long_nan.wav"]
    for r in recs:
        if "error" not in r:
            assert isinstance(r["text"], str) and r["duration"] > 0
    assert "Traceback" not in capsys.readouterr().err
    print(f"\ntranscribe fuzz ({'streaming' if streaming else 'offline'}): {len(files)} files, "
          f"{len(errors)} clear errors, {len(recs) - len(errors)} transcribed")


def test_cli_prints_no_traceback(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    files = fuzz_files(tmp_path, np.random.default_rng(SEED + 1))[::4]
    rc = main(["transcribe", "--model", str(model), "--mode", "ctc_greedy", *map(str, files)])
    captured = capsys.readouterr()
    assert rc == 1 and len(captured.out.splitlines()) == len(files)
    assert "Traceback" not in captured.err and "Traceback" not in captured.out


# ---- WebSocket server ---------------------------------------------------------------------------
BAD_VALUES = [None, True, False, 0, -1, 1.5, 1e308, 2**64, "", "x", "1", [], [1], {}, {"a": 1}]


def protocol_cases(rng: np.random.Generator) -> list[str | bytes]:
    """Text and binary frames a client might send first: wrong JSON types in every field, non-JSON,
    non-object JSON, deep nesting, random bytes and text."""
    cases: list[str | bytes] = []
    for field in ("signal", "nbest", "continuous_decoding"):
        for v in BAD_VALUES:
            cases.append(json.dumps({"signal": "start", field: v}))
    cases += [json.dumps(v) for v in BAD_VALUES] + ["", "{", "}", "null", "[" * 100_000 + "]" * 100_000,
                                                     '{"signal": "start"' + ', "x": 1' * 1000 + "}"]
    for _ in range(10):
        n = int(rng.integers(1, 3000))
        cases.append(rng.bytes(n))  # binary before start: odd and even lengths
        cases.append(rng.bytes(n).decode("latin-1"))  # random text
    return cases


async def _first_reply(url: str, frame: str | bytes) -> dict | None:
    """Send one frame on a fresh connection; the server's first reply (None if it closed instead)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url, max_size=None) as ws:
        await ws.send(frame)
        try:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))
        except ConnectionClosed:
            return None


def test_server_survives_malformed_messages(model: Path) -> None:
    from serve_fake import FakeRecognizer, burst, silence
    from test_serve import finals, utterance, wait_sessions

    from qifusion.serve.server import ServerConfig, ServerThread, load_recognizer

    cases = protocol_cases(np.random.default_rng(SEED))
    with ServerThread(ServerConfig(port=0), recognizer=FakeRecognizer()) as srv:
        async def run_all() -> list[dict | None]:
            return [await _first_reply(srv.url, c) for c in cases]

        replies = asyncio.run(run_all())
        for frame, reply in zip(cases, replies):
            assert reply is not None, f"server closed on {str(frame)[:80]!r}"
            assert reply["status"] in ("ok", "failed") and "Traceback" not in json.dumps(reply)
            if reply["status"] == "failed":
                assert reply["message"] and "\n" not in reply["message"]
        n_failed = sum(r["status"] == "failed" for r in replies)  # type: ignore[index]
        assert n_failed >= len(cases) - 10  # only type-correct starts (nbest 2**64, extra keys...) succeed
        assert wait_sessions(srv, 0) == 0  # every session was freed
        assert finals(asyncio.run(utterance(srv.url, np.concatenate([burst(0.1), silence(0.2)])))) == ["b"]

    # random PCM (full-scale noise, odd piece sizes) through a real model while another client is served
    rng = np.random.default_rng(SEED + 2)
    cfg = ServerConfig(model_dir=model, port=0, chunk_size=8, max_utterance_s=2.0)
    with ServerThread(cfg, recognizer=load_recognizer(cfg)) as srv:
        async def noisy() -> list[dict]:
            from websockets.asyncio.client import connect

            async with connect(srv.url) as ws:
                await ws.send(json.dumps({"signal": "start", "continuous_decoding": True}))
                await ws.recv()
                for _ in range(12):  # ~2.4 s: also crosses max_utterance_s
                    n = 2 * int(rng.integers(1, 6400)) + int(rng.integers(0, 2))  # some odd lengths
                    await ws.send(rng.bytes(n))
                await ws.send(json.dumps({"signal": "end"}))
                out = []
                with contextlib.suppress(Exception):
                    async for m in ws:
                        out.append(json.loads(m))
                return out

        async def both() -> tuple[list[dict], list[dict]]:
            clean = utterance(srv.url, noise_utterance(1.0, sr=16000, seed=9))
            return await asyncio.gather(noisy(), clean)

        noisy_msgs, clean_msgs = asyncio.run(both())
        assert noisy_msgs[-1]["type"] == "speech_end"
        assert any(m["status"] == "failed" and "16-bit" in m["message"] for m in noisy_msgs)
        assert clean_msgs[-1]["type"] == "speech_end" and clean_msgs[-2]["type"] == "final_result"
        assert wait_sessions(srv, 0) == 0
    print(f"\nserver fuzz: {len(cases)} protocol cases ({n_failed} answered 'failed', the rest "
          "'server_ready'), 1 random-PCM session beside a clean one")
