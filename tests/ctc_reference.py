"""Reference CTC searches for tests and benchmarks only: a plain per-frame Python loop and brute force.

``reference_prefix_beam`` is the textbook dict-based CTC prefix beam search (Hannun et al. 2014, as in
WeNet), with the same per-frame top-k token pruning as :func:`qifusion.decode.ctc_search.ctc_prefix_beam`.
``brute_force_prefix_probs`` sums the probabilities of all T^V frame paths per collapsed label sequence.
"""

from __future__ import annotations

import itertools
import math

import torch

NEG_INF = -math.inf


def _lse(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def reference_prefix_beam(log_probs: torch.Tensor, *, beam_size: int, token_topk: int, blank_id: int = 0):
    """(T, V) -> list of (tokens tuple, log prob) best first."""
    hyps = {(): (0.0, NEG_INF)}
    top_p, top_u = log_probs.double().topk(min(token_topk, log_probs.shape[-1]), dim=-1)
    for ps, us in zip(top_p.tolist(), top_u.tolist()):
        nxt: dict[tuple[int, ...], list[float]] = {}
        for c, p in zip(us, ps):
            for prefix, (pb, pnb) in hyps.items():
                if c == blank_id:
                    e = nxt.setdefault(prefix, [NEG_INF, NEG_INF])
                    e[0] = _lse(e[0], _lse(pb, pnb) + p)
                elif prefix and prefix[-1] == c:
                    e = nxt.setdefault(prefix, [NEG_INF, NEG_INF])
                    e[1] = _lse(e[1], pnb + p)
                    e = nxt.setdefault((*prefix, c), [NEG_INF, NEG_INF])
                    e[1] = _lse(e[1], pb + p)
                else:
                    e = nxt.setdefault((*prefix, c), [NEG_INF, NEG_INF])
                    e[1] = _lse(e[1], _lse(pb, pnb) + p)
        ranked = sorted(nxt.items(), key=lambda kv: _lse(*kv[1]), reverse=True)[:beam_size]
        hyps = {k: tuple(v) for k, v in ranked}
    return [(k, _lse(*v)) for k, v in hyps.items()]


def collapse(path, blank_id: int = 0) -> tuple[int, ...]:
    out, prev = [], None
    for u in path:
        if u != blank_id and u != prev:
            out.append(u)
        prev = u
    return tuple(out)


def brute_force_prefix_probs(log_probs: torch.Tensor, blank_id: int = 0) -> dict[tuple[int, ...], float]:
    """(T, V) -> {label sequence: log P(sequence)} summed over all V^T frame paths."""
    lp = log_probs.double().tolist()
    T, V = len(lp), len(lp[0])
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        s = sum(lp[t][u] for t, u in enumerate(path))
        key = collapse(path, blank_id)
        probs[key] = _lse(probs.get(key, NEG_INF), s)
    return probs
