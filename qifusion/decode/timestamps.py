"""Token and word timestamps from a CTC alignment.

One output frame of the encoder covers ``subsampling * 10 ms`` of audio. Searches give each token the
frame of its first emission (``Hypothesis.times``); hypotheses that do not come from a CTC search
(attention beam) get their frames from :func:`ctc_force_align`, the best CTC path (Viterbi) that
emits exactly the given tokens. :func:`token_spans` turns frames into (start, end) seconds per token;
word grouping lives in :func:`qifusion.decode.text.words_from_tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class TokenSpan:
    """A token id with start/end in seconds."""

    token: int
    start: float
    end: float


def frame_shift_seconds(subsampling: int) -> float:
    """Seconds per encoder output frame (10 ms input frames times the sub-sampling rate)."""
    return 0.01 * subsampling


def ctc_force_align(log_probs: torch.Tensor, tokens: Sequence[int], *, blank_id: int = 0) -> list[int]:
    """First frame of each token on the best CTC path that emits exactly ``tokens``.

    Args:
        log_probs: (T', V) CTC log-probabilities of one utterance (valid frames only).
        tokens: the label sequence (no blanks).
    Returns:
        One frame index per token (non-decreasing, strictly increasing between tokens); an empty list
        when ``tokens`` is empty or cannot be aligned in T' frames (too many tokens/repeats).
    """
    T, L = log_probs.shape[0], len(tokens)
    if L == 0 or T == 0:
        return []
    lp = log_probs.detach().double()
    ext = torch.full((2 * L + 1,), blank_id, dtype=torch.long)
    ext[1::2] = torch.tensor(list(tokens), dtype=torch.long)
    S = ext.numel()
    # a skip s-2 -> s is allowed into a token that differs from the token two states back
    skip_ok = torch.zeros(S, dtype=torch.bool)
    skip_ok[3::2] = ext[3::2] != ext[1:-2:2]
    ninf = torch.tensor(-torch.inf, dtype=torch.float64)
    alpha = torch.full((S,), -torch.inf, dtype=torch.float64)
    alpha[:2] = lp[0, ext[:2]]
    choices = []
    for t in range(1, T):
        prev1 = torch.cat([ninf[None], alpha[:-1]])
        prev2 = torch.where(skip_ok, torch.cat([ninf.expand(2), alpha[:-2]]), ninf)
        best, arg = torch.stack([alpha, prev1, prev2]).max(0)
        choices.append(arg)
        alpha = best + lp[t, ext]
    end_s = S - 1 if S == 1 or alpha[S - 1] >= alpha[S - 2] else S - 2
    if not torch.isfinite(alpha[end_s]):
        return []
    states = [end_s]
    for arg in reversed(choices):
        states.append(states[-1] - int(arg[states[-1]]))
    states.reverse()
    first: dict[int, int] = {}
    for t, s in enumerate(states):
        if s % 2 == 1:
            first.setdefault(s // 2, t)
    return [first[i] for i in range(L)]


def token_spans(
    tokens: Sequence[int], times: Sequence[int], *, frame_shift: float, num_frames: int | None = None,
    max_frames: int = 4,
) -> list[TokenSpan]:
    """(start, end) seconds per token from first-emission frames ``times``.

    A CTC token is a spike: it starts at its frame and ends where the next token starts, but at most
    ``max_frames`` frames later (the trailing blanks of a word are silence or the next word's onset);
    the last token ends at most ``max_frames`` later and never after ``num_frames``.
    """
    spans = []
    for i, (tok, t) in enumerate(zip(tokens, times)):
        if i + 1 < len(times):
            nxt = times[i + 1]
        else:
            nxt = num_frames if num_frames is not None else t + max_frames
        end = min(max(nxt, t + 1), t + max_frames)
        spans.append(TokenSpan(int(tok), round(t * frame_shift, 3), round(end * frame_shift, 3)))
    return spans
