"""Reference CTC searches: a plain per-frame Python loop and brute force, for parity checks only.

Not used by decoding; the parity tests and ``benchmarks.speed.prefix_beam`` compare the vectorised
search against these (they live in the package so both can import them without path hacks).

``reference_prefix_beam`` is the textbook dict-based CTC prefix beam search (Hannun et al. 2014, as in
WeNet), with the same per-frame token pruning as :func:`qifusion.decode.ctc_search.ctc_prefix_beam`
(top-k tokens, then those below ``token_min_logp`` dropped except the best) and the same token-time
rule: per frame, a prefix keeps its times unless the extension that (re-)creates it carries more
probability than the paths that continue it. ``brute_force_prefix_probs`` sums the probabilities of
all V^T frame paths per collapsed label sequence.
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


def reference_prefix_beam(log_probs: torch.Tensor, *, beam_size: int, token_topk: int,
                          token_min_logp: float | None = None, blank_id: int = 0):
    """(T, V) -> list of (tokens tuple, log prob, times tuple) best first."""
    floor = NEG_INF if token_min_logp is None else token_min_logp
    hyps = {(): (0.0, NEG_INF, ())}
    top_p, top_u = log_probs.double().topk(min(token_topk, log_probs.shape[-1]), dim=-1)
    for t, (ps, us) in enumerate(zip(top_p.tolist(), top_u.tolist())):
        # prefix -> [P_blank, P_nonblank, mass continuing the prefix, mass of the extension, its times]
        nxt: dict[tuple[int, ...], list] = {}

        def entry(prefix, nxt=nxt):
            return nxt.setdefault(prefix, [NEG_INF, NEG_INF, NEG_INF, NEG_INF, ()])

        for i, (c, p) in enumerate(zip(us, ps)):
            if i > 0 and p < floor:
                continue
            for prefix, (pb, pnb, times) in hyps.items():
                if c == blank_id:
                    e = entry(prefix)
                    e[0] = _lse(e[0], _lse(pb, pnb) + p)
                    e[2] = _lse(e[2], _lse(pb, pnb) + p)
                elif prefix and prefix[-1] == c:
                    e = entry(prefix)
                    e[1] = _lse(e[1], pnb + p)
                    e[2] = _lse(e[2], pnb + p)
                    if pb == NEG_INF:  # no path ends in blank: no new token
                        continue
                    e = entry((*prefix, c))
                    e[1] = _lse(e[1], pb + p)
                    e[3], e[4] = pb + p, (*times, t)
                else:
                    e = entry((*prefix, c))
                    e[1] = _lse(e[1], _lse(pb, pnb) + p)
                    e[3], e[4] = _lse(pb, pnb) + p, (*times, t)
        new = {}
        for prefix, (pb, pnb, stay, ext, ext_times) in nxt.items():
            times = ext_times if ext > stay else hyps[prefix][2]
            new[prefix] = (pb, pnb, times)
        ranked = sorted(new.items(), key=lambda kv: _lse(kv[1][0], kv[1][1]), reverse=True)[:beam_size]
        hyps = dict(ranked)
    return [(k, _lse(v[0], v[1]), v[2]) for k, v in hyps.items()]


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
