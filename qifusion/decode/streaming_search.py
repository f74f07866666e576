"""Step-wise (incremental) CTC searches: feed CTC log-probabilities chunk by chunk.

A search object keeps its hypotheses between calls, so a stream's partial result costs only the new
frames; feeding all frames at once or in any split gives the same result. Used by the streaming
:class:`~qifusion.decode.recognizer.Recognizer`.

:class:`CtcPrefixBeamState` is the vectorised prefix beam search of
:class:`qifusion.decode.ctc_search.CtcPrefixBeamSearch` for one stream (the same code as offline
decoding, so tokens, times and scores agree with :func:`~qifusion.decode.ctc_search.ctc_prefix_beam`).
"""

from __future__ import annotations

from typing import Protocol

import torch

from qifusion.decode.ctc_search import TOKEN_MIN_LOGP, CtcPrefixBeamSearch
from qifusion.decode.hypothesis import Hypothesis
from qifusion.decode.options import DEFAULT_BEAM

__all__ = ["CtcGreedyState", "CtcPrefixBeamState", "Hypothesis", "StreamSearch"]


class StreamSearch(Protocol):
    """An incremental search of one stream (CTC greedy, CTC prefix beam, LM beam)."""

    def step(self, log_probs: torch.Tensor) -> None:
        """Consume new frames, ``log_probs`` (T', V)."""
        ...

    def finish(self) -> None:
        """The segment ends (the LM beam search scores the end of sentence)."""
        ...

    def nbest(self, n: int | None = None) -> list[Hypothesis]:
        """Hypotheses best first."""
        ...


class CtcGreedyState:
    """Incremental CTC greedy (best path) search; ``blank_id`` tokens and repeats are collapsed."""

    def __init__(self, *, blank_id: int = 0) -> None:
        self.blank_id = blank_id
        self.tokens: list[int] = []
        self.times: list[int] = []
        self.score = 0.0
        self.num_frames = 0
        self._last = blank_id

    def step(self, log_probs: torch.Tensor) -> None:
        """Consume new frames, ``log_probs`` (T', V)."""
        if log_probs.shape[0] == 0:
            return
        best, ids = log_probs.max(dim=-1)
        self.score += float(best.double().sum())
        for t, u in enumerate(ids.tolist()):
            if u != self.blank_id and u != self._last:
                self.tokens.append(u)
                self.times.append(self.num_frames + t)
            self._last = u
        self.num_frames += log_probs.shape[0]

    def finish(self) -> None:
        """End of the segment (nothing to do: every frame is already decided)."""

    def nbest(self, n: int = 1) -> list[Hypothesis]:
        """The single best path (``n`` is ignored beyond 1)."""
        return [Hypothesis(tuple(self.tokens), tuple(self.times), self.score)]


class CtcPrefixBeamState:
    """Incremental CTC prefix beam search of one stream.

    Args:
        beam_size: hypotheses kept after each frame.
        token_topk: tokens considered per frame (per-frame pruning); default ``beam_size``.
        token_min_logp: tokens below this log-probability are pruned (not a frame's best); None: off.
        blank_id: the blank token id.
    """

    def __init__(self, *, beam_size: int = DEFAULT_BEAM, token_topk: int | None = None,
                 token_min_logp: float | None = TOKEN_MIN_LOGP, blank_id: int = 0) -> None:
        self.beam_size = beam_size
        self.blank_id = blank_id
        self._search = CtcPrefixBeamSearch(1, beam_size=beam_size, token_topk=token_topk,
                                           token_min_logp=token_min_logp, blank_id=blank_id)

    @property
    def num_frames(self) -> int:
        """Frames consumed so far."""
        return self._search.num_frames

    def step(self, log_probs: torch.Tensor) -> None:
        """Consume new frames, ``log_probs`` (T', V) (any float dtype)."""
        self._search.advance(log_probs[None])

    @staticmethod
    def step_together(searches: list[CtcPrefixBeamState], log_probs: torch.Tensor) -> None:
        """``searches[i].step(log_probs[i])`` for all, in one vectorised update; log_probs (S, T', V)."""
        CtcPrefixBeamSearch.advance_together([s._search for s in searches], log_probs)

    def finish(self) -> None:
        """End of the segment (nothing to do: the prefix scores already sum over all paths)."""

    def nbest(self, n: int | None = None) -> list[Hypothesis]:
        """Hypotheses best first (at most ``n``; all kept ones by default)."""
        out = self._search.nbest()[0]
        return out[: n or len(out)]
