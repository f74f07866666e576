"""Step-wise (incremental) CTC searches: feed CTC log-probabilities chunk by chunk.

A search object keeps its hypotheses between calls, so a stream's partial result costs only the new
frames; feeding all frames at once or in any split gives the same result (the per-frame updates are
identical). Used by the streaming :class:`~qifusion.decode.recognizer.Recognizer`.

The prefix beam search is the standard CTC prefix beam search (Hannun et al. 2014, "First-pass large
vocabulary continuous speech recognition using bi-directional recurrent DNNs"; the formulation of
WeNet's ``ctc_prefix_beam_search``) with per-frame top-k token pruning done for a whole chunk at once by
``torch.topk``. Each hypothesis also carries the frame index at which each token was emitted (the
frame of the path that contributed most), which gives CTC timestamps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NEG_INF = -math.inf


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


@dataclass
class Hypothesis:
    """A CTC hypothesis: token ids, the output-frame index of each token, and its log score."""

    tokens: tuple[int, ...]
    times: tuple[int, ...]
    score: float


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

    def nbest(self, n: int = 1) -> list[Hypothesis]:
        """The single best path (``n`` is ignored beyond 1)."""
        return [Hypothesis(tuple(self.tokens), tuple(self.times), self.score)]


class CtcPrefixBeamState:
    """Incremental CTC prefix beam search.

    Args:
        beam_size: hypotheses kept after each frame.
        token_topk: tokens considered per frame (per-frame pruning); default ``beam_size``.
        blank_id: the blank token id.
    """

    def __init__(self, *, beam_size: int = 10, token_topk: int | None = None, blank_id: int = 0) -> None:
        self.beam_size = beam_size
        self.token_topk = token_topk or beam_size
        self.blank_id = blank_id
        self.num_frames = 0
        # prefix -> [log P(ending in blank), log P(ending in non-blank), times, score of times' path]
        self.hyps: dict[tuple[int, ...], list] = {(): [0.0, NEG_INF, (), 0.0]}

    def step(self, log_probs: torch.Tensor) -> None:
        """Consume new frames, ``log_probs`` (T', V) (any float dtype)."""
        if log_probs.shape[0] == 0:
            return
        k = min(self.token_topk, log_probs.shape[-1])
        top_p, top_u = log_probs.double().topk(k, dim=-1)
        for t, (ps, us) in enumerate(zip(top_p.tolist(), top_u.tolist())):
            self._frame(self.num_frames + t, ps, us)
        self.num_frames += log_probs.shape[0]

    def _frame(self, t: int, ps: list[float], us: list[int]) -> None:
        nxt: dict[tuple[int, ...], list] = {}

        def add(prefix: tuple[int, ...], *, pb: float, pnb: float, times: tuple[int, ...]) -> None:
            cur = nxt.get(prefix)
            contrib = _logaddexp(pb, pnb)
            if cur is None:
                nxt[prefix] = [pb, pnb, times, contrib]
                return
            cur[0] = _logaddexp(cur[0], pb)
            cur[1] = _logaddexp(cur[1], pnb)
            if contrib > cur[3]:
                cur[2], cur[3] = times, contrib

        for p, u in zip(ps, us):
            for prefix, (pb, pnb, times, _) in self.hyps.items():
                if u == self.blank_id:
                    add(prefix, pb=_logaddexp(pb, pnb) + p, pnb=NEG_INF, times=times)
                elif prefix and u == prefix[-1]:
                    # repeat without a blank in between: stays the same prefix
                    add(prefix, pb=NEG_INF, pnb=pnb + p, times=times)
                    # repeat after a blank: a new token
                    if pb != NEG_INF:
                        add((*prefix, u), pb=NEG_INF, pnb=pb + p, times=(*times, t))
                else:
                    add((*prefix, u), pb=NEG_INF, pnb=_logaddexp(pb, pnb) + p, times=(*times, t))
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(kv[1][0], kv[1][1]), reverse=True)
        self.hyps = dict(ranked[: self.beam_size])

    def nbest(self, n: int | None = None) -> list[Hypothesis]:
        """Hypotheses best first (at most ``n``; all kept ones by default)."""
        out = [Hypothesis(prefix, v[2], _logaddexp(v[0], v[1])) for prefix, v in self.hyps.items()]
        return out[: n or len(out)]
