"""Per-connection decoding state shared by the connection handler and the decode scheduler.

Threading rule: the event loop (connection handler) only appends to ``pending_audio`` and sets flags;
the scheduler hands pending audio over on the event loop and touches ``stream`` only inside its
worker thread. So a stream is never used by two threads at once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_ids = itertools.count(1)


@dataclass
class Outgoing:
    """A message for the client; ``close`` ends the connection after sending it."""

    text: str
    close: bool = False
    reason: str = ""  # close reason (when ``close``)


@dataclass(eq=False)  # identity semantics: sessions live in sets
class Session:
    """One client connection's utterance state.

    ``stream``: the recognizer stream (worker-thread only). ``samples_in``: 16 kHz samples received
    in this utterance; ``samples_since_final``: since the last final result (the per-utterance limit).
    ``compute_s``: this session's share of decode compute time (batched calls split evenly).
    """

    peer: str = "?"
    id: int = field(default_factory=lambda: next(_ids))
    started_at: float = field(default_factory=time.monotonic)
    stream: Any = None
    continuous: bool = False
    nbest: int = 1
    pending_audio: list[np.ndarray] = field(default_factory=list)
    end_requested: bool = False  # the client sent "end" (or a limit ended the utterance)
    over_limit: bool = False  # max utterance duration reached: later audio is dropped silently
    end_applied: bool = False  # input_finished() was called on the stream
    done: bool = False  # final_result + speech_end queued
    closed: bool = False  # the connection is gone; the scheduler drops the session
    samples_in: int = 0
    samples_since_final: int = 0
    compute_s: float = 0.0
    rounds_waiting: int = 0  # decode rounds this session's ready stream was left out of (max_batch)
    num_finals: int = 0
    last_partial: tuple[str, str | None] | None = None
    outbox: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)

    @property
    def audio_s(self) -> float:
        """Seconds of audio received (16 kHz)."""
        return self.samples_in / 16000.0

    def take_input(self) -> tuple[list[np.ndarray], bool]:
        """Hand pending audio (and the end flag, once) to the scheduler. Event-loop side only."""
        audio, self.pending_audio = self.pending_audio, []
        finish = self.end_requested and not self.end_applied
        if finish:
            self.end_applied = True
        return audio, finish

    def has_input(self) -> bool:
        """New audio or an unapplied end is waiting."""
        return bool(self.pending_audio) or (self.end_requested and not self.end_applied)

    def summary(self) -> str:
        """The per-session log line: duration, audio, compute, RTF."""
        wall = time.monotonic() - self.started_at
        rtf = self.compute_s / self.audio_s if self.audio_s > 0 else 0.0
        return (f"session {self.id} ({self.peer}) closed: {wall:.2f} s connected, "
                f"{self.audio_s:.2f} s audio, {self.compute_s:.3f} s compute, RTF {rtf:.3f}, "
                f"{self.num_finals} final(s)")
