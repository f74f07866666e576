"""Batched CTC searches over whole utterances: greedy (best path) and vectorised prefix beam search.

Both take ``log_probs`` (B, T', V) and ``lens`` (B,) and return, per utterance, hypotheses with token
ids, the output frame of each token's first emission (``times``, for timestamps) and a log score.

The prefix beam search is the CTC prefix beam search of Hannun et al. (2014) in the form used by
WeNet (``ctc_prefix_beam_search``): per frame only the top-k tokens are considered (per-frame token
pruning; the blank "stay" and the repeat-of-last-token paths also only through those tokens), and the
``beam_size`` best prefixes by total probability ``P_blank + P_nonblank`` are kept. Here one frame is
a handful of tensor operations for all utterances and beams together:

* each beam has one "stay" candidate (same prefix, via blank or a repeat of its last token) and each
  (beam, top-k token) pair an "extend" candidate (prefix + token),
* the beams are distinct prefixes, so extensions never equal each other, and an extension can only
  equal a kept prefix (when it re-creates it); such pairs are found by comparing 62-bit prefix keys
  (two polynomial rolling hashes) and merged with one log-add-exp,
* the best ``beam_size`` candidates are kept with ``topk``; back-pointers (parent beam, appended token)
  are stored per frame and followed once at the end.

A hash collision (probability ~ 1e-16 per comparison) would merge two different prefixes.
"""

from __future__ import annotations

import torch

from qifusion.decode.streaming_search import Hypothesis

_M1, _P1 = 2147483647, 1000003  # 2^31 - 1
_M2, _P2 = 2147483629, 998244353 % 2147483629


def ctc_greedy(log_probs: torch.Tensor, lens: torch.Tensor, *, blank_id: int = 0) -> list[Hypothesis]:
    """Best path decoding: per-frame argmax, repeats collapsed, blanks removed.

    Args:
        log_probs: (B, T', V) CTC log-probabilities.
        lens: (B,) valid frames per utterance.
    Returns:
        One hypothesis per utterance; ``score`` is the log-probability of the best path and ``times``
        the first frame of each emitted token.
    """
    best, ids = log_probs.max(dim=-1)  # (B, T')
    valid = torch.arange(ids.shape[1], device=ids.device)[None, :] < lens[:, None]
    prev = torch.nn.functional.pad(ids, (1, 0), value=blank_id)[:, :-1]
    emit = valid & (ids != blank_id) & (ids != prev)
    scores = torch.where(valid, best.double(), 0.0).sum(dim=1).tolist()
    out = []
    for b in range(ids.shape[0]):
        frames = emit[b].nonzero().squeeze(1)
        out.append(Hypothesis(tuple(ids[b, frames].tolist()), tuple(frames.tolist()), scores[b]))
    return out


def ctc_alignment(log_probs: torch.Tensor, lens: torch.Tensor) -> list[list[int]]:
    """Per-frame argmax ids (B lists of length ``lens[b]``): the greedy CTC alignment."""
    ids = log_probs.argmax(dim=-1).tolist()
    return [row[: int(n)] for row, n in zip(ids, lens.tolist())]


def ctc_prefix_beam(
    log_probs: torch.Tensor,
    lens: torch.Tensor,
    *,
    beam_size: int = 10,
    token_topk: int | None = None,
    blank_id: int = 0,
) -> list[list[Hypothesis]]:
    """Vectorised CTC prefix beam search (see module docstring).

    Args:
        log_probs: (B, T', V) CTC log-probabilities (computed in float64 internally).
        lens: (B,) valid frames per utterance.
        beam_size: prefixes kept after each frame.
        token_topk: tokens considered per frame; default ``beam_size``.
    Returns:
        Per utterance, up to ``beam_size`` hypotheses best first; ``score`` is the log prefix probability
        and ``times`` the frame at which each token was first emitted on the path carrying the most
        probability into the prefix.
    """
    B, _T, V = log_probs.shape
    N, K = beam_size, min(token_topk or beam_size, V)
    dev, f64 = log_probs.device, torch.float64
    ninf = torch.tensor(-torch.inf, dtype=f64, device=dev)
    top_v, top_i = log_probs.detach().topk(K, dim=-1)  # (B, T, K), all frames at once
    top_v = top_v.to(f64)
    blank_all = top_i == blank_id
    lens_l = lens.tolist()
    min_len = min(lens_l, default=0)
    pb = torch.full((B, N), -torch.inf, dtype=f64, device=dev)
    pb[:, 0] = 0.0
    pnb = torch.full_like(pb, -torch.inf)
    last = torch.full((B, N), -1, dtype=torch.long, device=dev)
    h1 = torch.zeros((B, N), dtype=torch.long, device=dev)
    h2 = torch.zeros_like(h1)
    parents, appended = [], []  # per frame (B, N): parent beam, appended token (-1: none)
    arange_n = torch.arange(N, device=dev).expand(B, N)
    dead_key = -1 - arange_n  # keys of empty beams never equal a real key (those are >= 0)
    ext_ids = torch.arange(N * K, device=dev).expand(B, N * K)
    zeros_n = torch.zeros((B, N), dtype=torch.long, device=dev)
    for t in range(max(lens_l, default=0)):
        tv, ti, is_blank = top_v[:, t, None, :], top_i[:, t, None, :], blank_all[:, t, None, :]  # (B,1,K)
        tot = torch.logaddexp(pb, pnb)  # (B, N)
        is_last = ti == last[:, :, None]  # (B, N, K)
        # stay: the prefix is unchanged (via blank, or via a repeat of its last token)
        s_pb = torch.where(is_blank, tot[:, :, None] + tv, ninf).amax(-1)
        s_pnb = torch.where(is_last, pnb[:, :, None] + tv, ninf).amax(-1)
        # extend: prefix + token (if the token repeats the last one, only from paths ending in blank)
        e_pnb = torch.where(is_blank, ninf, torch.where(is_last, pb[:, :, None], tot[:, :, None]) + tv)
        e_pnb = e_pnb.reshape(B, N * K)
        e_h1 = ((h1[:, :, None] * _P1 + ti + 1) % _M1).reshape(B, N * K)
        e_h2 = ((h2[:, :, None] * _P2 + ti + 1) % _M2).reshape(B, N * K)
        s_key = torch.where(torch.isfinite(tot), h1 * _M2 + h2, dead_key)
        # an extension equal to a kept prefix merges into it (at most one can: the beams are distinct)
        match = (e_h1 * _M2 + e_h2)[:, :, None] == s_key[:, None, :]  # (B, N*K, N)
        has = match.any(-1) & torch.isfinite(e_pnb)  # (B, N*K)
        target = match.to(torch.uint8).argmax(-1)  # the stay an extension merges into
        m_val = ninf.expand(B, N).scatter_reduce(1, target, torch.where(has, e_pnb, ninf), reduce="amax")
        m_idx = zeros_n.scatter_reduce(1, target, torch.where(has, ext_ids, 0), reduce="amax")
        own = torch.logaddexp(s_pb, s_pnb)
        st_pnb = torch.logaddexp(s_pnb, m_val)
        e_free = torch.where(has, ninf, e_pnb)
        cand = torch.cat([torch.logaddexp(s_pb, st_pnb), e_free], 1)  # (B, N + N*K)
        keep = cand.topk(N, dim=1).indices  # (B, N)
        is_stay = keep < N
        m = keep.clamp(max=N - 1)
        e = (keep - N).clamp(min=0)
        n_pb = torch.where(is_stay, s_pb.gather(1, m), ninf)
        n_pnb = torch.where(is_stay, st_pnb.gather(1, m), e_free.gather(1, e))
        # back-pointer: the stay itself, or the merged extension when that carried more probability
        via_ext = is_stay & (m_val.gather(1, m) > own.gather(1, m))
        e_rep = torch.where(is_stay, m_idx.gather(1, m), e)
        n_par = torch.where(is_stay & ~via_ext, m, e_rep // K)
        n_tok = torch.where(is_stay & ~via_ext, -1, top_i[:, t].gather(1, e_rep % K))
        n_last = torch.where(is_stay, last.gather(1, m), top_i[:, t].gather(1, e % K))
        n_h1 = torch.where(is_stay, h1.gather(1, m), e_h1.gather(1, e))
        n_h2 = torch.where(is_stay, h2.gather(1, m), e_h2.gather(1, e))
        if t >= min_len:  # utterances already finished keep their state
            active = torch.tensor([t < n for n in lens_l], device=dev)[:, None]
            n_pb, n_pnb = torch.where(active, n_pb, pb), torch.where(active, n_pnb, pnb)
            n_last = torch.where(active, n_last, last)
            n_h1, n_h2 = torch.where(active, n_h1, h1), torch.where(active, n_h2, h2)
            n_par, n_tok = torch.where(active, n_par, arange_n), torch.where(active, n_tok, -1)
        pb, pnb, last, h1, h2 = n_pb, n_pnb, n_last, n_h1, n_h2
        parents.append(n_par)
        appended.append(n_tok)
    return _backtrack(parents, appended, torch.logaddexp(pb, pnb), N)


def _backtrack(
    parents: list[torch.Tensor], appended: list[torch.Tensor], scores: torch.Tensor, beam: int
) -> list[list[Hypothesis]]:
    """Follow per-frame back-pointers (T lists of (B, N)) from the final beams; drop -inf beams."""
    B = scores.shape[0]
    if not parents:
        return [[Hypothesis((), (), 0.0)] for _ in range(B)]
    cur = torch.arange(beam, device=scores.device).expand(B, beam)
    toks = []
    for par, tok in zip(reversed(parents), reversed(appended)):
        toks.append(tok.gather(1, cur))
        cur = par.gather(1, cur)
    path = torch.stack(toks[::-1], dim=-1).cpu()  # (B, N, T): token appended at frame t, or -1
    score_l = scores.tolist()
    out = []
    for b in range(B):
        hyps = []
        for n in range(beam):
            if score_l[b][n] == -float("inf"):
                continue
            times = (path[b, n] >= 0).nonzero().squeeze(1)
            hyps.append(Hypothesis(tuple(path[b, n, times].tolist()), tuple(times.tolist()), score_l[b][n]))
        out.append(hyps)
    return out
