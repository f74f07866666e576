"""A tiny fake of the Recognizer/Stream contract for testing the server's protocol and limits.

Audio is cut into 0.1 s chunks; a loud chunk (mean |x| > 0.02) emits a letter chosen by its amplitude
(``amp 0.1 -> 'b'``, ``0.3 -> 'd'``, ...), repeats collapse as in CTC and a silent chunk ends a word.
So ``burst(0.1) + silence + burst(0.3)`` decodes to ``"b d"``. An endpoint is 1 s of trailing silence
after some text. Every ``decode_streams`` call records its batch size.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

CHUNK = 1600  # 0.1 s at 16 kHz
PROBS = {"en-us": 0.9, "en-gb": 0.1}  # the raw accent posteriors of every result


@dataclass
class FakeResult:
    text: str = ""
    accent: str | None = None
    accent_prob: float = 0.0
    words: list = field(default_factory=list)
    is_final: bool = False
    accent_probs: dict = field(default_factory=dict)


class FakeStream:
    def __init__(self) -> None:
        self.samples = np.zeros(0, dtype=np.float32)
        self.pos = 0
        self.finished = False
        self.finalized = False
        self.words: list[str] = []
        self.in_word = False
        self.trailing_silence = 0
        self.result = FakeResult()

    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> None:
        assert sample_rate == 16000
        assert not self.finished
        self.samples = np.concatenate([self.samples, np.asarray(samples, dtype=np.float32)])

    def input_finished(self) -> None:
        self.finished = True


class FakeRecognizer:
    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.threads: set[str] = set()
        self.fail_next = False  # make the next decode_streams call raise (error handling tests)

    def create_stream(self) -> FakeStream:
        return FakeStream()

    def is_ready(self, s: FakeStream) -> bool:
        left = len(s.samples) - s.pos
        return left >= CHUNK or (s.finished and not s.finalized)

    def decode_streams(self, streams: list[FakeStream]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        self.batch_sizes.append(len(streams))
        self.threads.add(threading.current_thread().name)
        for s in streams:
            chunk = s.samples[s.pos: s.pos + CHUNK]
            s.pos += len(chunk)
            if len(chunk):
                amp = float(np.abs(chunk).mean())
                if amp > 0.02:
                    letter = chr(ord("a") + round(amp * 10))
                    if not s.in_word:
                        s.words.append("")
                    if not s.words[-1].endswith(letter):
                        s.words[-1] += letter
                    s.in_word, s.trailing_silence = True, 0
                else:
                    s.in_word = False
                    s.trailing_silence += 1
            done = s.finished and len(s.samples) - s.pos < CHUNK and len(s.samples) == s.pos
            s.finalized = done
            s.result = FakeResult(text=" ".join(s.words), accent="en-us", accent_prob=0.9, is_final=done,
                                  accent_probs=dict(PROBS))

    def is_endpoint(self, s: FakeStream) -> bool:
        return bool(s.words) and s.trailing_silence >= 10

    def reset(self, s: FakeStream) -> FakeResult:
        seg = FakeResult(text=" ".join(s.words), accent="en-us", accent_prob=0.9, is_final=True,
                         accent_probs=dict(PROBS))
        s.words, s.in_word, s.trailing_silence = [], False, 0
        s.result = FakeResult()
        return seg


def burst(amp: float, seconds: float = 0.3) -> np.ndarray:
    """A constant-magnitude +/-amp square wave (mean |x| = amp)."""
    n = int(seconds * 16000)
    return (amp * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), dtype=np.float32)


def to_pcm(x: np.ndarray) -> bytes:
    """float [-1, 1] -> 16-bit little-endian PCM bytes (exact for samples read from a 16-bit wav)."""
    return np.clip(np.round(np.asarray(x) * 32768), -32768, 32767).astype("<i2").tobytes()
