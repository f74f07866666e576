"""The result type shared by all searches (re-exported by :mod:`qifusion.decode.streaming_search`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Hypothesis:
    """A CTC hypothesis: token ids, the output-frame index of each token, and its log score."""

    tokens: tuple[int, ...]
    times: tuple[int, ...]
    score: float
