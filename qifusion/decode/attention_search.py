"""Searches that use the attention decoder: batched beam search and CTC n-best rescoring.

``model`` needs only ``decoder_step(memory, memory_mask, ys, cache) -> (log_probs (N,V), cache)``
(cache: None at first, then a list of tensors whose dim 0 indexes the N rows) for the beam search and
``attention_scores(memory, lens, hyps_per_utt, *, reverse_weight) -> list[Tensor (N_b,)]`` for
rescoring (see docs/dev/contracts.md), so tests can pass a fake decoder.

The beam search follows the batched formulation of WeNet's ``attention_beam_search``: all B*beam
prefixes are advanced together, finished prefixes (last token eos) are carried with a zero-cost eos
extension, and the decoder caches are re-ordered by the chosen parents after each step. The search
stops when, for every utterance, a finished prefix scores at least as high as every live one (log
probabilities only decrease, so no live prefix can overtake it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from qifusion.decode.hypothesis import Hypothesis
from qifusion.decode.options import DEFAULT_BEAM, DEFAULT_CTC_WEIGHT
from qifusion.decode.timestamps import ctc_force_align


def _select(cache: Any, index: torch.Tensor) -> Any:
    """Rows ``index`` of a decoder cache (None, a tensor, or a list/tuple of them, dim 0 = rows)."""
    if cache is None:
        return None
    if isinstance(cache, torch.Tensor):
        return cache.index_select(0, index)
    return type(cache)(_select(c, index) for c in cache)


@torch.no_grad()
def attention_beam(
    model: Any,
    memory: torch.Tensor,
    lens: torch.Tensor,
    *,
    beam_size: int = DEFAULT_BEAM,
    sos_eos_id: int,
    max_len: int | None = None,
    ctc_log_probs: torch.Tensor | None = None,
    blank_id: int = 0,
) -> list[Hypothesis]:
    """Batched left-to-right attention beam search.

    Args:
        memory: (B, T', D) decoder input; lens: (B,) valid frames.
        sos_eos_id: the start and end symbol.
        max_len: most output tokens (default: the utterance's longest T').
        ctc_log_probs: (B, T', V) optional; when given, ``times`` come from CTC forced alignment.
    Returns:
        The best hypothesis per utterance (tokens without sos/eos; ``score`` = decoder log-probability
        including eos). Finished prefixes are preferred; an unfinished one at ``max_len`` is returned
        only when no prefix of the utterance finished.
    """
    B, T, _D = memory.shape
    N = beam_size
    dev = memory.device
    steps = max_len if max_len is not None else max(1, int(lens.max()))
    mem = memory.repeat_interleave(N, dim=0)  # (B*N, T', D)
    mmask = (torch.arange(T, device=dev)[None, :] < lens.repeat_interleave(N)[:, None])[:, None, :]
    ys = torch.full((B * N, 1), sos_eos_id, dtype=torch.long, device=dev)
    scores = torch.full((B, N), -torch.inf, device=dev)
    scores[:, 0] = 0.0  # one live prefix per utterance at the start
    scores = scores.reshape(B * N, 1)
    ended = torch.zeros(B * N, dtype=torch.bool, device=dev)
    cache = None
    for _ in range(steps):
        # scores only decrease, so an utterance is done once a finished prefix beats every live one
        sc = scores.reshape(B, N)
        fin = torch.where(ended.reshape(B, N), sc, -torch.inf).amax(1)
        live = torch.where(ended.reshape(B, N), -torch.inf, sc).amax(1)
        if bool((fin >= live).all()):
            break
        logp, cache = model.decoder_step(mem, mmask, ys, cache)  # (B*N, V)
        V = logp.shape[-1]
        k = min(N, V)
        top_v, top_i = logp.float().topk(k, dim=-1)  # (B*N, k)
        # a finished prefix only extends by eos at no cost (keeps it in the beam, unchanged score)
        fin_v = torch.full_like(top_v, -torch.inf)
        fin_v[:, 0] = 0.0
        top_v = torch.where(ended[:, None], fin_v, top_v)
        top_i = torch.where(ended[:, None], torch.full_like(top_i, sos_eos_id), top_i)
        cand = (scores + top_v).reshape(B, N * k)
        best_v, best_j = cand.topk(N, dim=1)  # (B, N)
        parent = (torch.arange(B, device=dev)[:, None] * N + best_j // k).reshape(-1)
        token = top_i.reshape(B, N * k).gather(1, best_j).reshape(-1, 1)
        ys = torch.cat([ys.index_select(0, parent), token], dim=1)
        cache = _select(cache, parent)
        scores = best_v.reshape(B * N, 1)
        ended = token.squeeze(1) == sos_eos_id
    # a finished prefix beats any unfinished one: a looping decoder that never emits eos within
    # ``max_len`` can hold high per-token scores, but its output is truncated garbage
    sc = scores.reshape(B, N)
    has_fin = ended.reshape(B, N).any(1, keepdim=True)
    best = torch.where(has_fin & ~ended.reshape(B, N), -torch.inf, sc).argmax(dim=1)
    out = []
    for b in range(B):
        row = ys[b * N + int(best[b]), 1:].tolist()
        toks = tuple(row[: row.index(sos_eos_id)] if sos_eos_id in row else row)
        times: tuple[int, ...] = ()
        if ctc_log_probs is not None and toks:
            times = tuple(ctc_force_align(ctc_log_probs[b, : int(lens[b])], toks, blank_id=blank_id))
        out.append(Hypothesis(toks, times, float(scores[b * N + int(best[b])])))
    return out


@torch.no_grad()
def attention_rescoring(
    model: Any,
    memory: torch.Tensor,
    lens: torch.Tensor,
    nbest: Sequence[Sequence[Hypothesis]],
    *,
    ctc_weight: float = DEFAULT_CTC_WEIGHT,
    reverse_weight: float = 0.0,
) -> list[Hypothesis]:
    """Rescore CTC n-best lists with the attention decoder(s).

    Args:
        memory: (B, T', D); lens: (B,); nbest[b]: the CTC hypotheses of utterance b (non-empty).
        ctc_weight: total = attention score + ``ctc_weight`` * CTC score.
        reverse_weight: weight of the right-to-left decoder (used by the model only if it has one).
    Returns:
        Per utterance the n-best entry with the highest total (its tokens and times; ``score`` = total).
    """
    hyps = [[list(h.tokens) for h in hs] for hs in nbest]
    att = model.attention_scores(memory, lens, hyps, reverse_weight=reverse_weight)
    out = []
    for hs, a in zip(nbest, att):
        total = a.double().cpu() + ctc_weight * torch.tensor([h.score for h in hs], dtype=torch.float64)
        i = int(total.argmax())
        out.append(Hypothesis(tuple(hs[i].tokens), tuple(hs[i].times), float(total[i])))
    return out
