"""Endpoint detection for continuous streaming decoding (trailing-silence rules).

The rules follow the idea of WeNet's runtime ``CtcEndpoint`` and sherpa-onnx's ``EndpointConfig``:
an endpoint fires when any rule holds. A rule is (must_contain_nonsilence, min_trailing_silence,
min_utterance_length):

- rule 1: >= 2.4 s of trailing silence, even if nothing was decoded (a long pause with no speech);
- rule 2: >= 1.2 s of trailing silence after something was decoded (end of a sentence);
- rule 3: the utterance reached 20 s (bounds memory and latency on long input).

Silence is measured on the CTC output: a frame (after sub-sampling) is silent when its blank
probability is at least ``blank_threshold`` (blank-dominated). Times are in seconds of audio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class EndpointRule:
    """One endpoint rule; ``0`` disables the silence or length condition."""

    must_contain_nonsilence: bool
    min_trailing_silence: float  # seconds
    min_utterance_length: float  # seconds

    def holds(self, *, has_speech: bool, trailing_silence: float, utterance_length: float) -> bool:
        """Whether this rule fires for the given stream statistics (seconds)."""
        if self.must_contain_nonsilence and not has_speech:
            return False
        eps = 1e-6  # frame counts times the frame shift are not exact in binary floating point
        if trailing_silence + eps < self.min_trailing_silence:
            return False
        return utterance_length + eps >= self.min_utterance_length


@dataclass
class EndpointConfig:
    """The three default rules (WeNet / sherpa-onnx defaults) and the silence definition."""

    rule1: EndpointRule = field(default_factory=lambda: EndpointRule(False, 2.4, 0.0))
    rule2: EndpointRule = field(default_factory=lambda: EndpointRule(True, 1.2, 0.0))
    rule3: EndpointRule = field(default_factory=lambda: EndpointRule(False, 0.0, 20.0))
    blank_threshold: float = 0.8  # a frame is silent when P(blank) >= this

    def is_endpoint(self, *, has_speech: bool, trailing_silence: float, utterance_length: float) -> bool:
        """True when any rule holds."""
        return any(
            r.holds(has_speech=has_speech, trailing_silence=trailing_silence,
                    utterance_length=utterance_length)
            for r in (self.rule1, self.rule2, self.rule3)
        )


class SilenceTracker:
    """Counts decoded frames and trailing blank-dominated frames of one stream.

    ``frame_shift`` is the duration of one model output frame in seconds (10 ms x sub-sampling).
    """

    def __init__(self, config: EndpointConfig, *, frame_shift: float) -> None:
        self.config = config
        self.frame_shift = frame_shift
        self.num_frames = 0
        self.trailing_blank_frames = 0
        self._log_threshold = math.log(config.blank_threshold) if config.blank_threshold > 0 else -math.inf

    def update(self, blank_log_probs: torch.Tensor) -> None:
        """Consume the blank log-probabilities of new frames, shape (T',)."""
        silent = (blank_log_probs >= self._log_threshold).tolist()
        for s in silent:
            self.trailing_blank_frames = self.trailing_blank_frames + 1 if s else 0
        self.num_frames += len(silent)

    @property
    def trailing_silence(self) -> float:
        """Seconds of trailing silence."""
        return self.trailing_blank_frames * self.frame_shift

    @property
    def utterance_length(self) -> float:
        """Seconds decoded since the last reset."""
        return self.num_frames * self.frame_shift

    def is_endpoint(self, *, has_speech: bool) -> bool:
        """Apply the configured rules; ``has_speech``: something was decoded since the last reset."""
        return self.config.is_endpoint(
            has_speech=has_speech,
            trailing_silence=self.trailing_silence,
            utterance_length=self.utterance_length,
        )

    def reset(self) -> None:
        """Start a new utterance."""
        self.num_frames = 0
        self.trailing_blank_frames = 0
