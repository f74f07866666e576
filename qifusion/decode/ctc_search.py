"""CTC searches: greedy (best path) and a vectorised prefix beam search shared by offline and streaming.

Both take ``log_probs`` (B, T', V) and ``lens`` (B,) and return, per utterance, hypotheses with token
ids, the output frame of each token's first emission (``times``, for timestamps) and a log score.

The prefix beam search is the CTC prefix beam search of Hannun et al. (2014) in the form used by
WeNet (``ctc_prefix_beam_search``), with per-frame token pruning: only the ``token_topk`` best tokens
of a frame whose log-probability is at least ``token_min_logp`` are considered (the frame's best token
always is; the idea of a log-prob floor is pyctcdecode's ``token_min_logp``). The blank "stay" and the
repeat-of-last-token paths also go only through those tokens. The ``beam_size`` best prefixes by
total probability ``P_blank + P_nonblank`` are kept. :class:`CtcPrefixBeamSearch` holds the state of
B utterances and can be fed chunk by chunk (the streaming search wraps it with B = 1); one frame is a
few dozen numpy operations on (B, N, K) arrays for all utterances and beams together:

* frames whose only surviving token is blank (most frames of a trained model) change nothing but
  ``P_blank = P_total + log p(blank)``, ``P_nonblank = -inf`` for every prefix, so runs of them are
  applied in one step (exactly) and only the other frames go through the beam update,
* each beam has one "stay" candidate (same prefix, via blank or a repeat of its last token) and each
  (beam, token) pair an "extend" candidate (prefix + token),
* the beams are distinct prefixes, so extensions never equal each other, and an extension can only
  equal a kept prefix (when it re-creates it: same parent prefix key and same last token); prefix keys
  are 62-bit (two polynomial rolling hashes); a collision (~1e-16 per comparison) would merge two
  prefixes,
* the best ``beam_size`` candidates are kept (stable sort); back-pointers (parent beam, appended
  token, frame) are stored per updated frame and followed when the n-best is read.

Token times: a prefix's times are those of the group of paths carrying the most probability into it
at each frame: the prefix continued (via blank or a repeat, its times unchanged) against the merged
extension that re-creates it (times of the parent + this frame); ties keep the continued prefix.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from qifusion.decode.hypothesis import Hypothesis

_M1, _P1 = 2147483647, 1000003  # 2^31 - 1
_M2, _P2 = 2147483629, 998244353 % 2147483629
TOKEN_MIN_LOGP = math.log(1e-3)  # default per-frame token floor: p < 0.001 is pruned
_NINF = -np.inf
_PRUNED = -2  # token id of a pruned candidate: never blank (>= 0) nor an empty prefix's last (-1)


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
    token_min_logp: float | None = TOKEN_MIN_LOGP,
    blank_id: int = 0,
) -> list[list[Hypothesis]]:
    """Vectorised CTC prefix beam search over whole utterances (see module docstring).

    Args:
        log_probs: (B, T', V) CTC log-probabilities (searched in float64).
        lens: (B,) valid frames per utterance.
        beam_size: prefixes kept after each frame.
        token_topk: at most this many tokens per frame; default ``beam_size``.
        token_min_logp: tokens below this log-probability are pruned (not the frame's best); None: off.
    Returns:
        Per utterance, up to ``beam_size`` hypotheses best first; ``score`` is the log prefix probability
        and ``times`` the first-emission frame of each token (rule in the module docstring).
    """
    search = CtcPrefixBeamSearch(log_probs.shape[0], beam_size=beam_size, token_topk=token_topk,
                                 token_min_logp=token_min_logp, blank_id=blank_id)
    search.advance(log_probs, lens)
    return search.nbest()


def _take(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.take_along_axis(a, idx, 1)


class CtcPrefixBeamSearch:
    """Prefix beam search state of ``batch_size`` utterances, fed chunk by chunk with :meth:`advance`.

    Feeding all frames at once or in any split gives the same hypotheses (up to float rounding of the
    blank-run sums, ~1e-15). State per utterance and beam (arrays (B, N)): ``pb``/``pnb`` log
    probabilities of the prefix ending in blank / non-blank, its last token, hash and parent hash.
    """

    def __init__(self, batch_size: int, *, beam_size: int = 10, token_topk: int | None = None,
                 token_min_logp: float | None = TOKEN_MIN_LOGP, blank_id: int = 0) -> None:
        if beam_size < 1 or (token_topk is not None and token_topk < 1):
            raise ValueError(f"beam_size and token_topk must be >= 1, got {beam_size}, {token_topk}")
        B, N = batch_size, beam_size
        self.beam_size, self.token_topk, self.blank_id = N, token_topk or N, blank_id
        self.token_min_logp = -math.inf if token_min_logp is None else float(token_min_logp)
        self.num_frames = 0
        self.pb = np.full((B, N), _NINF)
        self.pb[:, 0] = 0.0
        self.pnb = np.full((B, N), _NINF)
        self.last = np.full((B, N), -1, dtype=np.int64)
        self.h1 = np.zeros((B, N), dtype=np.int64)
        self.h2 = np.zeros((B, N), dtype=np.int64)
        self.pkey = np.full((B, N), -1, dtype=np.int64)  # key of the prefix without its last token
        self._steps: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (parent, token, frame)
        self._tokens = [[()] * N for _ in range(B)]  # materialised paths at the last flush
        self._times = [[()] * N for _ in range(B)]
        self._arange = np.broadcast_to(np.arange(N), (B, N))

    # ---- feeding frames ------------------------------------------------------------------------
    def advance(self, log_probs: torch.Tensor, lens: torch.Tensor | None = None) -> None:
        """Consume frames ``log_probs`` (B, T', V); ``lens`` (B,): valid frames of this chunk (all)."""
        B, T, V = log_probs.shape
        if T == 0:
            return
        lp = log_probs.detach()
        lp = lp if lp.dtype in (torch.float32, torch.float64) else lp.float()
        top_v, top_i = lp.topk(min(self.token_topk, V), dim=-1)
        tv, ti = top_v.double().cpu().numpy(), top_i.cpu().numpy().astype(np.int64)  # (B, T, K)
        keep = tv >= self.token_min_logp
        keep[..., 0] = True
        valid = np.ones((B, T), dtype=bool) if lens is None else np.arange(T) < lens.cpu().numpy()[:, None]
        keep &= valid[..., None]
        tv, ti = np.where(keep, tv, _NINF), np.where(keep, ti, _PRUNED)
        blank_only = (ti[..., 0] == self.blank_id) & ~keep[..., 1:].any(-1)  # (B, T)
        general = valid & ~blank_only
        # running sums of blank-only log-probs / counts, to apply a run of them in one step
        csum = np.zeros((B, T + 1))
        np.cumsum(np.where(blank_only, tv[..., 0], 0.0), axis=1, out=csum[:, 1:])
        ccnt = np.zeros((B, T + 1), dtype=np.int64)
        np.cumsum(blank_only, axis=1, out=ccnt[:, 1:])
        counts = general.sum(1)
        M = int(counts.max())
        rows = np.arange(B)[:, None]
        frames = np.argsort(~general, axis=1, kind="stable")[:, :M]  # (B, M) general frames in order
        active = np.arange(M)[None, :] < counts[:, None]
        starts = np.concatenate([np.zeros((B, 1), dtype=np.int64), frames[:, :-1] + 1], 1)
        run_sum = csum[rows, frames] - csum[rows, starts]
        run_on = active & (ccnt[rows, frames] > ccnt[rows, starts])
        step_v, step_i = tv[rows, frames], ti[rows, frames]  # (B, M, K)
        step_blank = np.where(step_i == self.blank_id, step_v, _NINF).max(-1, initial=_NINF)  # (B, M)
        all_active = active.all(0).tolist()
        for m in range(M):
            self._blank_run(run_sum[:, m], run_on[:, m])
            self._frame(step_v[:, m], step_i[:, m], step_blank[:, m], frames[:, m] + self.num_frames,
                        None if all_active[m] else active[:, m])
        tail = np.where(counts > 0, frames[np.arange(B), np.maximum(counts - 1, 0)] + 1, 0) if M else 0
        tail = np.broadcast_to(tail, (B,))
        self._blank_run(csum[:, T] - csum[np.arange(B), tail], ccnt[:, T] > ccnt[np.arange(B), tail])
        self.num_frames += T

    def _blank_run(self, total: np.ndarray, on: np.ndarray) -> None:
        """Apply a run of blank-only frames with summed log-prob ``total`` (B,) where ``on`` (B,)."""
        if not on.any():
            return
        new_pb = np.logaddexp(self.pb, self.pnb) + total[:, None]
        self.pb = np.where(on[:, None], new_pb, self.pb)
        self.pnb = np.where(on[:, None], _NINF, self.pnb)

    def _frame(self, tv: np.ndarray, ti: np.ndarray, p_blank: np.ndarray, frame: np.ndarray,
               active: np.ndarray | None) -> None:
        """One beam update: candidates ``tv``/``ti`` (B, K), blank log-prob (B,), frame index (B,)."""
        pb, pnb, last = self.pb, self.pnb, self.last
        B, N = pb.shape
        K = tv.shape[1]
        tot = np.logaddexp(pb, pnb)
        live = tot > _NINF
        key = np.where(live, self.h1 * _M2 + self.h2, -1)
        is_last = ti[:, None, :] == last[:, :, None]  # (B, N, K)
        s_pb = tot + p_blank[:, None]  # stay via blank
        s_pnb = pnb + np.where(is_last, tv[:, None, :], _NINF).max(-1)  # stay via a repeat
        e = np.where(is_last, pb[:, :, None], tot[:, :, None]) + tv[:, None, :]  # extend (B, N, K)
        e = np.where((ti == self.blank_id)[:, None, :], _NINF, e)
        # match[b, n, k, j]: prefix n + token k re-creates kept prefix j
        match = ((key[:, :, None] == self.pkey[:, None, :])[:, :, None, :]
                 & (ti[:, :, None] == last[:, None, :])[:, None, :, :] & live[:, None, None, :])
        mk = np.where(match, e[..., None], _NINF).reshape(B, N * K, N)
        m_idx = mk.argmax(1)  # (B, N): the extension merging into stay j
        m_val = _take(mk, m_idx[:, None, :])[:, 0]
        e_free = np.where(match.any(-1).reshape(B, N * K), _NINF, e.reshape(B, N * K))
        own = np.logaddexp(s_pb, s_pnb)
        st_pnb = np.logaddexp(s_pnb, m_val)
        cand = np.concatenate([np.logaddexp(s_pb, st_pnb), e_free], 1)  # (B, N + N*K)
        order = np.argsort(-cand, axis=1, kind="stable")[:, :N]
        is_stay = order < N
        sm, ex = np.minimum(order, N - 1), np.maximum(order - N, 0)
        n_pb = np.where(is_stay, _take(s_pb, sm), _NINF)
        n_pnb = np.where(is_stay, _take(st_pnb, sm), _take(e_free, ex))
        plain = is_stay & ~(_take(m_val, sm) > _take(own, sm))  # else the merged extension's path
        src = np.where(is_stay, _take(m_idx, sm), ex)
        par = np.where(plain, sm, src // K)
        tok = np.where(plain, -1, _take(ti, src % K))
        e_par, e_tok = ex // K, _take(ti, ex % K)
        n_h1 = np.where(is_stay, _take(self.h1, sm), (_take(self.h1, e_par) * _P1 + e_tok + 1) % _M1)
        n_h2 = np.where(is_stay, _take(self.h2, sm), (_take(self.h2, e_par) * _P2 + e_tok + 1) % _M2)
        n_pkey = np.where(is_stay, _take(self.pkey, sm), _take(key, e_par))
        n_last = np.where(is_stay, _take(last, sm), e_tok)
        if active is not None:  # utterances without a frame at this step keep their state
            a = active[:, None]
            n_pb, n_pnb = np.where(a, n_pb, pb), np.where(a, n_pnb, pnb)
            n_h1, n_h2 = np.where(a, n_h1, self.h1), np.where(a, n_h2, self.h2)
            n_pkey, n_last = np.where(a, n_pkey, self.pkey), np.where(a, n_last, last)
            par, tok = np.where(a, par, self._arange), np.where(a, tok, -1)
        self.pb, self.pnb, self.h1, self.h2, self.pkey, self.last = n_pb, n_pnb, n_h1, n_h2, n_pkey, n_last
        self._steps.append((par, tok, frame))

    # ---- reading results -----------------------------------------------------------------------
    def _flush(self) -> None:
        """Follow the back-pointers stored since the last flush and materialise each beam's path."""
        if not self._steps:
            return
        cur = self._arange
        toks, times = [], []
        for par, tok, frame in reversed(self._steps):
            t = _take(tok, cur)
            toks.append(t)
            times.append(np.broadcast_to(frame[:, None], t.shape))
            cur = _take(par, cur)
        path_tok = np.stack(toks[::-1], -1).tolist()  # (B, N, S): token appended at step s, or -1
        path_time = np.stack(times[::-1], -1).tolist()
        origin = cur.tolist()
        new_tokens, new_times = [], []
        for b, (tb, fb) in enumerate(zip(path_tok, path_time)):
            row_t, row_f = [], []
            for n, (tn, fn) in enumerate(zip(tb, fb)):
                o = origin[b][n]
                row_t.append(self._tokens[b][o] + tuple(u for u in tn if u >= 0))
                row_f.append(self._times[b][o] + tuple(f for u, f in zip(tn, fn) if u >= 0))
            new_tokens.append(row_t)
            new_times.append(row_f)
        self._tokens, self._times, self._steps = new_tokens, new_times, []

    def nbest(self) -> list[list[Hypothesis]]:
        """Per utterance, the live hypotheses best first."""
        self._flush()
        scores = np.logaddexp(self.pb, self.pnb).tolist()
        return [[Hypothesis(self._tokens[b][n], self._times[b][n], s) for n, s in enumerate(row) if s > _NINF]
                for b, row in enumerate(scores)]
