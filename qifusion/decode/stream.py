"""One audio stream of the streaming :class:`~qifusion.decode.recognizer.Recognizer`.

A :class:`Stream` holds everything that is per-stream: the online fbank (with its resampler), the
model's caches (:class:`StreamState`), the incremental CTC search, the memory kept for attention
rescoring, the running accent statistics and the endpoint silence counter. The recognizer owns the
model and does the computing; streams can be at different positions and still be decoded together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from qifusion.data.features import OnlineFbank
from qifusion.decode.endpoint import SilenceTracker
from qifusion.decode.gate import SpeechEvidence
from qifusion.decode.streaming_search import StreamSearch


@dataclass
class Word:
    """A word (English) or unit with start/end in seconds of stream time."""

    word: str
    start: float
    end: float


@dataclass
class Segment:
    """A finished piece of a stream (between resets / endpoints); times in seconds of stream time."""

    start: float
    end: float
    text: str
    tokens: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    accent: str | None = None
    accent_prob: float = 0.0
    accent_probs: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (times rounded to ms)."""
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "text": self.text,
            "accent": self.accent,
            "accent_prob": round(self.accent_prob, 4),
            "words": [
                {"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in self.words
            ],
        }


@dataclass
class StreamResult:
    """What a stream has decoded so far in its current segment.

    ``text``/``tokens``/``timestamps`` (token start times in seconds of stream time) are the partial
    result while decoding and the final one once ``is_final`` (after input_finished and the last
    decode, attention-rescored when configured). ``accent``/``accent_prob``: the running accent
    estimate (argmax of the accent posteriors averaged over the segment's frames).
    ``segments``: segments finished by :meth:`Recognizer.reset` (continuous decoding).
    """

    text: str = ""
    tokens: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    accent: str | None = None
    accent_prob: float = 0.0
    accent_probs: dict[str, float] = field(default_factory=dict)
    is_final: bool = False
    start: float = 0.0
    end: float = 0.0
    segments: list[Segment] = field(default_factory=list)


class Stream:
    """Audio in, partial and final results out. Create with :meth:`Recognizer.create_stream`.

    The stream owns its per-segment state; the recognizer moves it forward only through
    :meth:`finish_segment` and :meth:`start_segment`. ``result`` is the final result once the segment
    is finalised, else the partial one, made on demand by the recognizer's ``partial`` function.
    """

    def __init__(self, *, num_mel_bins: int, model_state: Any, search: StreamSearch, silence: SilenceTracker,
                 partial: Callable[[Stream], StreamResult], hotwords: tuple[Any, ...] | None = None) -> None:
        self.fbank = OnlineFbank(num_mel_bins=num_mel_bins)
        self.silence = silence
        self.evidence = SpeechEvidence()  # CTC speech evidence of the current segment (speech gate)
        self.next_frame = 0  # next fbank frame (absolute index) where a chunk starts
        self.frame_offset = 0  # model output frames before the current segment (stream time)
        self.segments: list[Segment] = []
        self.hotwords = hotwords  # LM-mode biasing of this stream
        self.num_samples_in = 0  # input samples at the input rate
        self.sample_rate: int | None = None
        self._finished = False
        self._partial = partial
        self._begin(model_state, search)

    def _begin(self, model_state: Any, search: StreamSearch) -> None:
        self.model_state = model_state
        self.search = search
        self.memory: list[torch.Tensor] = []  # (T_chunk, D) pieces of the current segment
        self.ctc_log_probs: list[torch.Tensor] = []  # (T_chunk, V) pieces (attention mode only)
        self.accent_sum: torch.Tensor | None = None  # (A,) sum of accent evidence
        self.accent_frames = 0
        self.final_hyp: Any = None  # Hypothesis chosen at finalisation (rescored)
        self._final: StreamResult | None = None

    # ---- segments (called by the recognizer) --------------------------------------------------
    def finish_segment(self, hyp: Any, result: StreamResult) -> None:
        """Freeze the current segment's final hypothesis and result."""
        self.final_hyp = hyp
        self._final = result

    def start_segment(self, model_state: Any, search: StreamSearch) -> None:
        """Begin a new segment after the current one (fresh caches and search; audio position kept)."""
        self.frame_offset += self.silence.num_frames
        self.silence.reset()
        self.evidence.reset()
        self._begin(model_state, search)

    @property
    def finalized(self) -> bool:
        """True once the current segment's final result is computed."""
        return self._final is not None

    # ---- audio in -----------------------------------------------------------------------------
    def accept_waveform(self, sample_rate: int, samples: np.ndarray | torch.Tensor | list[float]) -> None:
        """Append (N,) float mono samples in [-1, 1] at ``sample_rate`` Hz (any piece size, any rate;
        the rate must stay the same within a stream). int16 arrays are scaled to [-1, 1]."""
        if self._finished:
            raise RuntimeError("accept_waveform() called after input_finished()")
        x = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
        if x.dtype == np.int16:
            x = x.astype(np.float32) / 32768.0
        x = np.clip(np.asarray(x, dtype=np.float32).reshape(-1), -1.0, 1.0)
        self.fbank.accept_waveform(sample_rate, x)
        self.sample_rate = int(sample_rate)
        self.num_samples_in += x.shape[0]

    def input_finished(self) -> None:
        """No more audio will come: the remaining frames are decoded, then the final result."""
        if not self._finished:
            self.fbank.input_finished()
            self._finished = True

    @property
    def is_input_finished(self) -> bool:
        return self._finished

    @property
    def duration(self) -> float:
        """Seconds of audio accepted so far."""
        return self.num_samples_in / self.sample_rate if self.sample_rate else 0.0

    # ---- results ------------------------------------------------------------------------------
    @property
    def result(self) -> StreamResult:
        """The current segment's final result once finalised, else its partial result so far."""
        return self._final if self._final is not None else self._partial(self)
