"""Decode scheduler: one loop batches the ready streams of all sessions into ``decode_streams`` calls.

The scheduler runs on the event loop; model compute runs in a single worker thread (an executor), so
the loop keeps accepting audio and answering other clients while a batch is computed. Each round:

1. on the loop: hand every session's pending audio / end flag over (see :mod:`.session`);
2. in the worker: ``accept_waveform`` / ``input_finished`` on the streams, then either a *final
   round* or a *chunk round* (below), then endpoint checks (``is_endpoint`` -> ``reset`` for continuous
   decoding); results are copied into plain events;
3. on the loop: events become protocol messages in each session's outbox.

Finals first: the user of a finishing stream (its client sent ``end``) is the one waiting, so when any
ready stream is finishing, the round decodes only finishing streams (at most ``final_batch``), all their
remaining chunks and their finalisation (rescoring), and their finals go out before other streams' next
chunks are touched.
A chunk round decodes one chunk of at most ``chunk_batch`` ready streams (those passed over longest
first) in one ``recognizer.decode_streams`` call; the cap keeps a round short, so an ``end`` that
arrives during a round waits for little chunk work before its final round. Batching many streams per
step follows sherpa-onnx's online websocket server.

Rounds repeat while any stream is ready, else the scheduler sleeps until a session signals new input.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qifusion.eval.calibration import AccentView
from qifusion.serve import protocol
from qifusion.serve.protocol import SAMPLE_RATE
from qifusion.serve.session import Outgoing, Session

log = logging.getLogger("qifusion.serve")


@dataclass
class Event:
    """A result copied out of a stream in the worker thread."""

    kind: str  # "partial" | "final"
    text: str
    accent: str | None
    accent_prob: float
    words: list[Any] = field(default_factory=list)
    end_of_speech: bool = False  # final after the client's end: speech_end follows
    accent_probs: dict[str, float] = field(default_factory=dict)  # raw posteriors (calibrated on delivery)


Work = tuple[Session, list[np.ndarray], bool]  # session, new audio pieces, input finished now
# Streams per round. On one core a chunk of the shipped model costs about the same per stream in a
# batch of 8 as in a batch of 32 (the GEMMs are already compute-bound at 8), so small chunk rounds
# lose no throughput and an `end` waits for little. A final round costs one unbatched tail chunk and
# the rescoring per stream: a few per round let the first finals out while others finish.
CHUNK_BATCH = 8
FINAL_BATCH = 4


class DecodeScheduler:
    """Batches all sessions' ready streams; ``recognizer`` follows the Recognizer/Stream contract."""

    def __init__(self, recognizer: Any, *, max_batch: int = 64, chunk_batch: int = CHUNK_BATCH,
                 final_batch: int = FINAL_BATCH, executor: Executor | None = None,
                 accent_view: AccentView | None = None) -> None:
        self.recognizer = recognizer
        self.accent_view = accent_view or AccentView(None)  # how accents are shown (calibration)
        self.max_batch = max_batch  # most streams per decode_streams call
        self.chunk_batch = min(chunk_batch, max_batch)  # most streams per chunk round
        self.final_batch = min(final_batch, max_batch)  # most finishing streams per final round
        self.sessions: set[Session] = set()
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="qifusion-decode")
        self._own_executor = executor is None
        self._wake = asyncio.Event()
        self.batch_sizes: list[int] = []  # decode_streams batch sizes (stats, tests)
        self.compute_s = 0.0

    # ---- session side (event loop) ------------------------------------------------------------
    def add(self, session: Session) -> None:
        self.sessions.add(session)

    def remove(self, session: Session) -> None:
        session.closed = True
        self.sessions.discard(session)

    def notify(self) -> None:
        """Wake the loop: a session has new input."""
        self._wake.set()

    async def create_stream(self, hotwords: tuple[Any, ...] | None = None) -> Any:
        """A new recognizer stream, made in the worker thread (never concurrently with a decode);
        ``hotwords`` bias its LM search (passed only when given)."""
        make = self.recognizer.create_stream
        if hotwords:
            make = functools.partial(make, hotwords)
        return await asyncio.get_running_loop().run_in_executor(self._executor, make)

    # ---- loop -----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Decode forever (cancel the task to stop)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while await self.step(loop):
                    await asyncio.sleep(0)  # let handlers enqueue audio between rounds
        finally:
            if self._own_executor:
                self._executor.shutdown(wait=False, cancel_futures=True)

    async def step(self, loop: asyncio.AbstractEventLoop | None = None) -> bool:
        """One round over all sessions; returns True when more work may be waiting."""
        loop = loop or asyncio.get_running_loop()
        work = [(s, *s.take_input()) for s in list(self.sessions) if s.stream is not None and not s.done]
        if not work:
            return False
        try:
            events, more = await loop.run_in_executor(self._executor, self._compute, work)
        except Exception as e:  # a decoding bug must not stop the server: fail these sessions only
            log.exception("decoding failed; closing %d session(s)", len(work))
            for session, _, _ in work:
                session.done = True
                session.outbox.put_nowait(Outgoing(protocol.failed(f"internal decoding error: {e}"),
                                                   close=True, reason="internal error"))
            return False
        for session, session_events in events.items():
            if not session.closed:
                self._deliver(session, session_events)
        return more or any(s.has_input() for s in self.sessions)

    # ---- worker thread --------------------------------------------------------------------------
    def _compute(self, work: list[Work]) -> tuple[dict[Session, list[Event]], bool]:
        rec = self.recognizer
        for session, audio, finish in work:
            for piece in audio:
                session.stream.accept_waveform(SAMPLE_RATE, piece)
            if finish:
                session.stream.input_finished()
        ready = [s for s, _, _ in work if not s.closed and rec.is_ready(s.stream)]
        events: dict[Session, list[Event]] = {}
        if not ready:
            return events, False
        finishing = [s for s in ready if s.end_applied]
        # a final round (finishing streams alone, to their final result) or a chunk round (one chunk of
        # at most chunk_batch streams); either way those passed over longest go first
        batch = finishing or ready
        batch.sort(key=lambda s: -s.rounds_waiting)
        cap = self.final_batch if finishing else self.chunk_batch
        for s in batch[cap:]:
            s.rounds_waiting += 1
        batch = batch[:cap]
        for s in batch:
            s.rounds_waiting = 0
        t0 = time.perf_counter()
        todo = batch
        while todo:  # a final round repeats until its streams are finalised
            rec.decode_streams([s.stream for s in todo])
            self.batch_sizes.append(len(todo))
            for s in todo:  # after every chunk: endpoints of continuous decoding are checked per chunk
                events.setdefault(s, []).extend(self._collect(s))
            todo = [s for s in todo if rec.is_ready(s.stream)] if finishing else []
        elapsed = time.perf_counter() - t0
        self.compute_s += elapsed
        for s in batch:
            s.compute_s += elapsed / len(batch)
        more = any(not s.closed and rec.is_ready(s.stream) for s, _, _ in work)
        return events, more

    def _collect(self, s: Session) -> list[Event]:
        """Turn a stream's state after a decode into events (finals, endpoint resets, partials)."""
        rec, stream = self.recognizer, s.stream
        r = stream.result
        if r.is_final:
            return [Event("final", r.text, r.accent, r.accent_prob, list(r.words), end_of_speech=True,
                          accent_probs=dict(r.accent_probs))]
        if s.continuous and rec.is_endpoint(stream):
            seg = rec.reset(stream)  # finalises (rescoring) and starts the next segment
            if not seg.text:
                return []  # a long pause with nothing decoded: no empty final
            return [Event("final", seg.text, seg.accent, seg.accent_prob, list(seg.words),
                          accent_probs=dict(seg.accent_probs))]
        return [Event("partial", r.text, r.accent, r.accent_prob, accent_probs=dict(r.accent_probs))]

    # ---- back on the loop -----------------------------------------------------------------------
    def _deliver(self, s: Session, events: list[Event]) -> None:
        view = self.accent_view
        for ev in events:
            accent, accent_prob = view.present(ev.accent_probs)
            if ev.kind == "partial":
                key = (ev.text, accent)
                if not ev.text or key == s.last_partial:
                    continue  # like WeNet: no partial before something is decoded; skip repeats
                s.last_partial = key
                s.outbox.put_nowait(Outgoing(protocol.result_message(
                    [ev.text], final=False, accent=accent, accent_prob=accent_prob,
                    accent_id=view.summary())))
                continue
            s.num_finals += 1
            s.samples_since_final = 0
            s.last_partial = None
            s.outbox.put_nowait(Outgoing(protocol.result_message(
                [ev.text], final=True, accent=accent, accent_prob=accent_prob, words=ev.words,
                accent_id=view.summary())))
            if ev.end_of_speech:
                s.done = True
                s.outbox.put_nowait(Outgoing(protocol.speech_end(), close=True))

