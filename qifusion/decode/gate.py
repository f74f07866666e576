"""Speech gate: silence and non-speech give an empty result instead of a hallucinated word.

Without a gate the model turns 3 s of silence into "the" (the attention decoder's favourite word on a
blank-only CTC lattice). The gate uses the model's own CTC posteriors (T', V) of a segment:

* ``speech_frames``: output frames whose blank posterior is below 0.5 (the model hears a unit);
* ``confidence``: mean top non-blank posterior over the frames whose argmax is not blank.

A segment is speech when it has at least :data:`MIN_SPEECH_FRAMES` speech frames (silence, hum, tones
give 2-4) and, when the model dir is calibrated (``qifusion calibrate``), a confidence of at least the
model's ``gate_min_confidence``: 0.8 x the 1st percentile of its dev utterances' confidence (a weak
model is less sure of real speech than a good one, so this threshold is per model). Numbers on dev
speech and sox-made silence, noise and music-like inputs: ``python -m benchmarks.ood.measure``
(docs/transcribe.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_SPEECH_FRAMES = 8  # 320 ms of output frames at x4 sub-sampling
BLANK_SPEECH = 0.5  # a frame with blank posterior below this is a speech frame


@dataclass
class SpeechEvidence:
    """Counts over the CTC posteriors of one segment (streaming: updated chunk by chunk)."""

    frames: int = 0
    speech_frames: int = 0
    conf_sum: float = 0.0
    conf_frames: int = 0

    def update(self, log_probs: torch.Tensor, blank_id: int = 0) -> None:
        """Add the frames of ``log_probs`` (T', V) log posteriors."""
        if log_probs.numel() == 0:
            return
        probs = log_probs.detach().float().exp()
        blank = probs[:, blank_id]
        self.frames += int(probs.shape[0])
        self.speech_frames += int((blank < BLANK_SPEECH).sum())
        nonblank = probs.clone()
        nonblank[:, blank_id] = -1.0
        top = nonblank.max(dim=-1).values
        emitting = probs.argmax(dim=-1) != blank_id
        self.conf_sum += float(top[emitting].sum())
        self.conf_frames += int(emitting.sum())

    @property
    def confidence(self) -> float:
        return self.conf_sum / self.conf_frames if self.conf_frames else 0.0

    def is_speech(self, min_confidence: float = 0.0) -> bool:
        """Enough speech frames, and a confidence of at least ``min_confidence``."""
        return self.speech_frames >= MIN_SPEECH_FRAMES and self.confidence >= min_confidence

    def reset(self) -> None:
        self.frames = self.speech_frames = self.conf_frames = 0
        self.conf_sum = 0.0
