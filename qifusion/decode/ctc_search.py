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
from qifusion.decode.options import DEFAULT_BEAM

_M1, _P1 = 2147483647, 1000003  # 2^31 - 1
_M2, _P2 = 2147483629, 998244353 % 2147483629
TOKEN_MIN_LOGP = math.log(1e-3)  # default per-frame token floor: p < 0.001 is pruned
_NINF = -np.inf
_PRUNED = -2  # token id of a pruned candidate: never blank (>= 0) nor an empty prefix's last (-1)
_ROW_FIELDS = ("pb", "pnb", "last", "h1", "h2", "pkey")  # the (B, N) beam arrays of a search


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
    beam_size: int = DEFAULT_BEAM,
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


class CtcPrefixBeamSearch:
    """Prefix beam search state of ``batch_size`` utterances, fed chunk by chunk with :meth:`advance`.

    Feeding all frames at once or in any split gives the same hypotheses (up to float rounding of the
    blank-run sums, ~1e-15). State per utterance and beam (arrays (B, N)): ``pb``/``pnb`` log
    probabilities of the prefix ending in blank / non-blank, its last token, hash and parent hash.
    """

    def __init__(self, batch_size: int, *, beam_size: int = DEFAULT_BEAM, token_topk: int | None = None,
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
        self._steps: list[tuple[np.ndarray, np.ndarray]] = []  # per update: (fields (B, 6, N), frame (B,))
        self._tokens = [[()] * N for _ in range(B)]  # materialised paths at the last flush
        self._times = [[()] * N for _ in range(B)]
        self._arange = np.broadcast_to(np.arange(N), (B, N))
        self._arange_n = np.arange(N)
        self._rows = np.arange(B)[:, None]
        self._jn = (self._rows * N + self._arange_n) * N  # flat offset of row (b, j) in (B, N, N)
        self._cache: dict[int, tuple[np.ndarray, ...]] = {}

    def _indices(self, K: int) -> tuple[np.ndarray, ...]:
        """Flat-index offsets for K candidate tokens per frame (cached per K)."""
        if K not in self._cache:
            N, rows = self.beam_size, self._rows
            W = N + N * K
            self._cache[K] = (rows * K, (rows * N + self._arange_n) * K, rows * (N * K),
                              (rows * 2 + np.arange(2)[None, :])[:, :, None] * W,
                              (rows * 6 + np.arange(6)[None, :])[:, :, None] * W,
                              np.repeat(np.arange(N), K))
        return self._cache[K]

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
        is_blank = step_i == self.blank_id
        step_blank = np.where(is_blank, step_v, _NINF).max(-1, initial=_NINF)  # (B, M)
        step_vnb = np.where(is_blank, _NINF, step_v)
        k_used = (step_i != _PRUNED).sum(-1).max(0, initial=1).tolist()  # candidates needed per step
        all_active = active.all(0).tolist()
        for m in range(M):
            k = k_used[m]
            self._blank_run(run_sum[:, m], run_on[:, m])
            self._frame(step_v[:, m, :k], step_i[:, m, :k], step_vnb[:, m, :k], step_blank[:, m],
                        frames[:, m] + self.num_frames, None if all_active[m] else active[:, m])
        b_idx = np.arange(B)
        tail = np.zeros_like(counts)  # first frame after the last updated one
        if M:
            tail = np.where(counts > 0, frames[b_idx, np.maximum(counts - 1, 0)] + 1, 0)
        self._blank_run(csum[:, T] - csum[b_idx, tail], ccnt[:, T] > ccnt[b_idx, tail])
        self.num_frames += T

    @staticmethod
    def advance_together(searches: list[CtcPrefixBeamSearch], log_probs: torch.Tensor) -> None:
        """Advance single-utterance searches (batch size 1 each, the same settings) by one chunk each,
        ``log_probs`` (S, T', V), in one vectorised update (the streams of a batched chunk step). Rows
        never mix, so each search ends as if advanced alone; its frame count may differ from the others'.
        """
        if len(searches) == 1:
            searches[0].advance(log_probs)
            return
        first = searches[0]
        config = (first.beam_size, first.token_topk, first.token_min_logp, first.blank_id)
        if any(s.pb.shape[0] != 1 or (s.beam_size, s.token_topk, s.token_min_logp, s.blank_id) != config
               for s in searches):
            raise ValueError("advance_together needs single-utterance searches with the same settings")
        both = CtcPrefixBeamSearch(len(searches), beam_size=first.beam_size, token_topk=first.token_topk,
                                   token_min_logp=first.token_min_logp, blank_id=first.blank_id)
        for name in _ROW_FIELDS:
            setattr(both, name, np.concatenate([getattr(s, name) for s in searches]))
        both.num_frames = np.array([s.num_frames for s in searches])  # type: ignore[assignment]
        both.advance(log_probs)
        for b, s in enumerate(searches):
            for name in _ROW_FIELDS:
                setattr(s, name, getattr(both, name)[b : b + 1].copy())
            s._steps.extend((sel[b : b + 1], frame[b : b + 1]) for sel, frame in both._steps)
            s.num_frames += int(log_probs.shape[1])

    def _blank_run(self, total: np.ndarray, on: np.ndarray) -> None:
        """Apply a run of blank-only frames with summed log-prob ``total`` (B,) where ``on`` (B,)."""
        if not on.any():
            return
        new_pb = np.logaddexp(self.pb, self.pnb) + total[:, None]
        self.pb = np.where(on[:, None], new_pb, self.pb)
        self.pnb = np.where(on[:, None], _NINF, self.pnb)

    def _frame(self, tv: np.ndarray, ti: np.ndarray, tv_nb: np.ndarray, p_blank: np.ndarray,
               frame: np.ndarray, active: np.ndarray | None) -> None:
        """One beam update. Candidates ``tv``/``ti`` (B, K) (``tv_nb``: blank's set to -inf), blank
        log-prob (B,), frame index (B,); ``active`` (B,): rows to update (None: all)."""
        pb, pnb, last, h1, h2, pkey = self.pb, self.pnb, self.last, self.h1, self.h2, self.pkey
        B, N = pb.shape
        K = tv.shape[1]
        W = N + N * K  # candidates: N stays, then N*K extensions (beam n, token k) at N + n*K + k
        tot = np.logaddexp(pb, pnb)
        live = tot > _NINF
        key = np.where(live, h1 * _M2 + h2, -1)
        is_last = ti[:, None, :] == last[:, :, None]  # (B, N, K)
        kj = is_last.argmax(-1)  # candidate index of each beam's last token
        off_k, off_nk, off_b, off_f, off_i, ext_parent = self._indices(K)
        has_k = is_last.reshape(-1)[off_nk + kj]
        s_pnb = pnb + np.where(has_k, tv.reshape(-1)[off_k + kj], _NINF)  # stay via a repeat
        s_pb = tot + p_blank[:, None]  # stay via blank
        e = (np.where(is_last, pb[:, :, None], tot[:, :, None]) + tv_nb[:, None, :]).reshape(B, N * K)
        # beam j is re-created by extending its parent pn[j] with its last token kj[j]
        eqp = pkey[:, :, None] == key[:, None, :]  # (B, N_j, N_n)
        pn = eqp.argmax(-1)
        src_m = pn * K + kj
        merged = has_k & live & eqp.reshape(-1)[self._jn + pn]
        flat_m = off_b + src_m
        m_val = np.where(merged, e.reshape(-1)[flat_m], _NINF)
        e.reshape(-1)[flat_m[merged]] = _NINF  # merged extensions are no candidates of their own
        st_pnb = np.logaddexp(s_pnb, m_val)
        via = m_val > np.logaddexp(s_pb, s_pnb)  # the merged extension carries more: its path
        fl = np.empty((B, 2, W))
        fl[:, 0, :N], fl[:, 0, N:] = s_pb, _NINF
        fl[:, 1, :N], fl[:, 1, N:] = st_pnb, e
        order = (-np.logaddexp(fl[:, 0], fl[:, 1])).argsort(axis=1, kind="stable")[:, :N]
        # int fields of every candidate: parent, appended token (-1: none), h1, h2, parent key, last
        it = np.empty((B, 6, W), dtype=np.int64)
        tok_e = ti[:, None, :].repeat(N, axis=1).reshape(B, N * K)
        it[:, 0, :N], it[:, 0, N:] = np.where(via, pn, self._arange), ext_parent
        it[:, 1, :N], it[:, 1, N:] = np.where(via, last, -1), tok_e
        it[:, 2, :N], it[:, 2, N:] = h1, ((h1[:, :, None] * _P1 + ti[:, None, :] + 1) % _M1).reshape(B, -1)
        it[:, 3, :N], it[:, 3, N:] = h2, ((h2[:, :, None] * _P2 + ti[:, None, :] + 1) % _M2).reshape(B, -1)
        it[:, 4, :N], it[:, 4, N:] = pkey, key.repeat(K, axis=1)
        it[:, 5, :N], it[:, 5, N:] = last, tok_e
        sel_f = fl.reshape(-1)[off_f + order[:, None, :]]  # (B, 2, N)
        sel_i = it.reshape(-1)[off_i + order[:, None, :]]  # (B, 6, N)
        if active is not None:  # utterances without a frame at this step keep their state
            a = active[:, None, None]
            sel_f = np.where(a, sel_f, np.stack([pb, pnb], 1))
            keep_i = np.stack([self._arange, np.full_like(last, -1), h1, h2, pkey, last], 1)
            sel_i = np.where(a, sel_i, keep_i)
        self.pb, self.pnb = sel_f[:, 0], sel_f[:, 1]
        self.h1, self.h2, self.pkey, self.last = sel_i[:, 2], sel_i[:, 3], sel_i[:, 4], sel_i[:, 5]
        self._steps.append((sel_i, frame))  # back-pointers: sel_i[:, 0] parent, sel_i[:, 1] token

    # ---- reading results -----------------------------------------------------------------------
    def _flush(self) -> None:
        """Follow the back-pointers stored since the last flush and materialise each beam's path."""
        if not self._steps:
            return
        N = self.beam_size
        base = self._rows * (6 * N)
        cur = self._arange
        toks = []
        for sel, _ in reversed(self._steps):
            flat = sel.reshape(-1)
            toks.append(flat[base + N + cur])
            cur = flat[base + cur]
        path_tok = np.stack(toks[::-1], -1)  # (B, N, S): token appended at step s, or -1
        frames = np.stack([f for _, f in self._steps], -1)[:, None, :]  # (B, 1, S)
        path_time = np.where(path_tok >= 0, frames, -1).tolist()
        path_tok, origin = path_tok.tolist(), cur.tolist()
        new_tokens, new_times = [], []
        for b, (tb, fb) in enumerate(zip(path_tok, path_time)):
            row_t, row_f = [], []
            for n, (tn, fn) in enumerate(zip(tb, fb)):
                o = origin[b][n]
                row_t.append(self._tokens[b][o] + tuple(u for u in tn if u >= 0))
                row_f.append(self._times[b][o] + tuple(f for f in fn if f >= 0))
            new_tokens.append(row_t)
            new_times.append(row_f)
        self._tokens, self._times, self._steps = new_tokens, new_times, []

    def nbest(self) -> list[list[Hypothesis]]:
        """Per utterance, the live hypotheses best first."""
        self._flush()
        scores = np.logaddexp(self.pb, self.pnb).tolist()
        return [[Hypothesis(self._tokens[b][n], self._times[b][n], s) for n, s in enumerate(row) if s > _NINF]
                for b, row in enumerate(scores)]
