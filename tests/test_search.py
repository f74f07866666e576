"""CTC and attention searches on synthetic tensors and a fake decoder."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from qifusion.decode.ctc_reference import brute_force_prefix_probs, collapse, reference_prefix_beam
from qifusion.decode.search import (
    Hypothesis,
    attention_beam,
    attention_rescoring,
    ctc_greedy,
    ctc_prefix_beam,
)
from qifusion.decode.streaming_search import CtcPrefixBeamState
from qifusion.decode.timestamps import ctc_force_align, token_spans


def _rand_lp(B: int, T: int, V: int, *, seed: int, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, V, generator=g) * scale).log_softmax(-1)


def test_greedy_collapses_repeats_and_blanks() -> None:
    ids = [[0, 3, 3, 0, 3, 2, 2, 0], [1, 1, 0, 1, 0, 0, 0, 0]]
    lp = torch.full((2, 8, 4), -5.0)
    for b, row in enumerate(ids):
        for t, u in enumerate(row):
            lp[b, t, u] = -0.1
    hyps = ctc_greedy(lp, torch.tensor([8, 4]))
    assert hyps[0].tokens == (3, 3, 2) and hyps[0].times == (1, 4, 5)
    assert hyps[1].tokens == (1, 1) and hyps[1].times == (0, 3)
    assert hyps[1].score == pytest.approx(-0.4)


@pytest.mark.parametrize("seed", range(4))
def test_prefix_beam_1_top1_equals_greedy(seed: int) -> None:
    lp = _rand_lp(3, 40, 7, seed=seed)
    lens = torch.tensor([40, 25, 3])
    greedy = ctc_greedy(lp, lens)
    beam = ctc_prefix_beam(lp, lens, beam_size=1, token_topk=1)
    for g, hs in zip(greedy, beam):
        assert len(hs) == 1
        assert hs[0].tokens == g.tokens and hs[0].times == g.times
        assert hs[0].score == pytest.approx(g.score, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_prefix_beam_exact_against_brute_force(seed: int) -> None:
    lp = _rand_lp(2, 5, 4, seed=seed)
    lens = torch.tensor([5, 4])
    res = ctc_prefix_beam(lp, lens, beam_size=500, token_topk=4, token_min_logp=None)
    for b in range(2):
        exact = brute_force_prefix_probs(lp[b, : int(lens[b])])
        got = {h.tokens: h.score for h in res[b]}
        assert set(got) == set(exact)
        for k, v in exact.items():
            assert got[k] == pytest.approx(v, abs=1e-9)
        scores = [h.score for h in res[b]]
        assert scores == sorted(scores, reverse=True)


def _peaky_lp(B: int, T: int, V: int, *, seed: int, blank_frac: float = 0.6) -> torch.Tensor:
    """Like a trained model: most frames are > 99.9 % blank (runs of blank-only frames)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 2.0
    logits[:, :, 0] += 12.0 * (torch.rand(B, T, generator=g) < blank_frac)
    return logits.log_softmax(-1)


@pytest.mark.parametrize(("beam", "topk", "floor", "seed"), [
    (5, 3, None, 0), (4, 6, None, 1), (8, 2, -4.0, 2), (3, 3, -2.0, 3), (6, 9, math.log(1e-3), 4),
])
@pytest.mark.parametrize("peaky", [False, True])
def test_prefix_beam_matches_reference_loop(beam: int, topk: int, floor: float | None, seed: int,
                                            peaky: bool) -> None:
    lp = (_peaky_lp if peaky else _rand_lp)(3, 60, 9, seed=seed)
    lens = torch.tensor([60, 37, 1])
    res = ctc_prefix_beam(lp, lens, beam_size=beam, token_topk=topk, token_min_logp=floor)
    for b in range(3):
        ref = reference_prefix_beam(lp[b, : int(lens[b])], beam_size=beam, token_topk=topk,
                                    token_min_logp=floor)
        assert [h.tokens for h in res[b]] == [r[0] for r in ref]
        assert [h.times for h in res[b]] == [r[2] for r in ref]
        assert [h.score for h in res[b]] == pytest.approx([r[1] for r in ref], abs=1e-9)


@pytest.mark.parametrize("floor", [None, math.log(1e-3), -3.0])
def test_batched_search_equals_streaming_state_on_random_inputs(floor: float | None) -> None:
    """40 random utterances: the batched search and the chunk-fed streaming state agree exactly."""
    g = torch.Generator().manual_seed(17)
    B, T, V = 8, 70, 11
    for rep in range(5):
        lp = (_peaky_lp if rep % 2 else _rand_lp)(B, T, V, seed=100 + rep)
        lens = torch.randint(1, T + 1, (B,), generator=g)
        lens[0] = T
        batched = ctc_prefix_beam(lp, lens, beam_size=6, token_topk=4, token_min_logp=floor)
        for b in range(B):
            state = CtcPrefixBeamState(beam_size=6, token_topk=4, token_min_logp=floor)
            cuts = sorted({0, int(lens[b]), *torch.randint(0, int(lens[b]) + 1, (3,), generator=g).tolist()})
            for lo, hi in itertools.pairwise(cuts):
                state.step(lp[b, lo:hi])
            assert state.num_frames == int(lens[b])
            got = state.nbest()
            assert [h.tokens for h in got] == [h.tokens for h in batched[b]]
            assert [h.times for h in got] == [h.times for h in batched[b]]
            assert [h.score for h in got] == pytest.approx([h.score for h in batched[b]], abs=1e-9)


@pytest.mark.parametrize("floor", [None, -3.0])
def test_streams_stepped_together_equal_streams_stepped_alone(floor: float | None) -> None:
    """Streams at different positions (different histories) advanced in one vectorised update per
    chunk, as the Recognizer does for a batch, end exactly as when each is advanced alone."""
    S, V, C = 5, 11, 8
    lp = [(_peaky_lp if i % 2 else _rand_lp)(1, 60, V, seed=200 + i)[0] for i in range(S)]
    alone = [CtcPrefixBeamState(beam_size=6, token_topk=4, token_min_logp=floor) for _ in range(S)]
    together = [CtcPrefixBeamState(beam_size=6, token_topk=4, token_min_logp=floor) for _ in range(S)]
    for i in range(S):  # stream i starts i chunks early: different frame counts and flushed paths
        for k in range(i):
            alone[i].step(lp[i][k * C : (k + 1) * C])
            together[i].step(lp[i][k * C : (k + 1) * C])
        together[i].nbest()  # one of them flushed (paths materialised) before the joint steps
    for step in range(3):
        chunk = torch.stack([lp[i][(i + step) * C : (i + step + 1) * C] for i in range(S)])
        for i in range(S):
            alone[i].step(chunk[i])
        CtcPrefixBeamState.step_together(together, chunk)
    for a, t in zip(alone, together):
        assert t.num_frames == a.num_frames
        got, want = t.nbest(), a.nbest()
        assert [h.tokens for h in got] == [h.tokens for h in want] and len(got) > 1
        assert [h.times for h in got] == [h.times for h in want]
        assert [h.score for h in got] == [h.score for h in want]


def test_prefix_beam_equals_streaming_search() -> None:
    """The incremental search of the streaming API gives the same n-best (tokens, times, scores)."""
    lp = _rand_lp(1, 80, 12, seed=7, scale=3.0)
    res = ctc_prefix_beam(lp, torch.tensor([80]), beam_size=6, token_topk=6)[0]
    inc = CtcPrefixBeamState(beam_size=6, token_topk=6)
    inc.step(lp[0, :33])
    inc.step(lp[0, 33:])
    ref = inc.nbest()
    assert [h.tokens for h in res] == [h.tokens for h in ref]
    assert [h.times for h in res] == [h.times for h in ref]
    assert [h.score for h in res] == pytest.approx([h.score for h in ref], abs=1e-9)
    assert len(inc.nbest(2)) == 2


def test_prefix_beam_time_rule_compares_continued_mass_with_extension() -> None:
    """(1,) is continued by blank (0.18) and by a repeat (0.18) and re-created from () (0.27):
    the continued paths carry more (0.36), so the token keeps its first frame 0."""
    p = torch.tensor([[[0.6, 0.4, 1e-9], [0.45, 0.45, 0.1]]]).log()
    for floor in (None, -5.0):
        best = ctc_prefix_beam(p, torch.tensor([2]), beam_size=4, token_topk=3, token_min_logp=floor)[0][0]
        assert best.tokens == (1,) and best.times == (0,)
        assert best.score == pytest.approx(math.log(0.63), abs=1e-6)
        ref = reference_prefix_beam(p[0], beam_size=4, token_topk=3, token_min_logp=floor)[0]
        assert ref[0] == (1,) and ref[2] == (0,)
    p[0, 0] = torch.tensor([0.8, 0.2, 1e-9]).log()  # now the extension (0.36) beats 0.09 + 0.09
    assert ctc_prefix_beam(p, torch.tensor([2]), beam_size=4)[0][0].times == (1,)


def test_prefix_beam_times_are_first_emission_of_tokens() -> None:
    lp = torch.full((1, 6, 3), math.log(0.01))
    for t, u in enumerate([0, 1, 1, 0, 2, 0]):
        lp[0, t, u] = math.log(0.98)
    best = ctc_prefix_beam(lp, torch.tensor([6]), beam_size=4)[0][0]
    assert best.tokens == (1, 2) and best.times == (1, 4)


def test_token_floor_prunes_blank_frames_but_keeps_the_best_token() -> None:
    lp = _peaky_lp(1, 50, 7, seed=9, blank_frac=0.9)
    loose = ctc_prefix_beam(lp, torch.tensor([50]), beam_size=4, token_min_logp=None)[0][0]
    tight = ctc_prefix_beam(lp, torch.tensor([50]), beam_size=4, token_min_logp=0.0)[0][0]
    greedy = ctc_greedy(lp, torch.tensor([50]))[0]
    assert tight.tokens == greedy.tokens and tight.times == greedy.times  # only each frame's best
    assert tight.score == pytest.approx(greedy.score, abs=1e-9)
    assert loose.score > tight.score  # summing over more paths


class FakeModel:
    """Decoder whose next-token log-probs depend only on the last token (a Markov chain).

    Its cache is the prefix ys itself, so a wrong cache re-ordering in the beam search is caught.
    """

    def __init__(self, trans: torch.Tensor, sos_eos: int) -> None:
        self.trans, self.sos_eos, self.steps = trans, sos_eos, 0

    def decoder_step(self, memory, memory_mask, ys, cache):
        if cache is None:
            assert ys.shape[1] == 1
        else:
            assert torch.equal(cache[0], ys[:, :-1].float()), "cache not re-ordered with the beams"
        assert memory.shape[0] == ys.shape[0] == memory_mask.shape[0]
        self.steps += 1
        return self.trans[ys[:, -1]], [ys.float()]

    def attention_scores(self, memory, lens, hyps_per_utt, *, reverse_weight=0.0):
        out = []
        for hyps in hyps_per_utt:
            s = []
            for h in hyps:
                seq = [self.sos_eos, *h, self.sos_eos]
                s.append(sum(float(self.trans[a, b]) for a, b in itertools.pairwise(seq)))
            out.append(torch.tensor(s))
        return out


def _best_markov(trans: torch.Tensor, sos_eos: int, max_len: int) -> tuple[tuple[int, ...], float]:
    """Brute force over all finished sequences (<= max_len with eos) and unfinished ones of max_len."""
    V = trans.shape[0]
    real = [v for v in range(V) if v != sos_eos]
    best: tuple[tuple[int, ...], float] = ((), -math.inf)
    for n in range(max_len + 1):
        for seq in itertools.product(real, repeat=n):
            path = [sos_eos, *seq]
            s = sum(float(trans[a, b]) for a, b in itertools.pairwise(path))
            cand = [s + float(trans[path[-1], sos_eos])] if n < max_len else [s]
            for c in cand:
                if c > best[1]:
                    best = (seq, c)
    return best


@pytest.mark.parametrize("seed", range(3))
def test_attention_beam_finds_brute_force_best(seed: int) -> None:
    V, sos = 5, 4  # tokens 0..3 (0 = blank, never emitted by a decoder in practice, fine here)
    g = torch.Generator().manual_seed(seed)
    trans = (torch.randn(V, V, generator=g) * 2).log_softmax(-1)
    model = FakeModel(trans, sos)
    memory = torch.zeros(2, 6, 3)
    lens = torch.tensor([6, 4])
    max_len = 3
    hyps = attention_beam(model, memory, lens, beam_size=64, sos_eos_id=sos, max_len=max_len)
    tokens, score = _best_markov(trans, sos, max_len)
    for h in hyps:  # both utterances share the chain
        assert h.tokens == tokens
        assert h.score == pytest.approx(score, abs=1e-5)


def test_attention_beam_small_beam_on_peaked_chain() -> None:
    V, sos = 6, 5
    trans = torch.full((V, V), -8.0)
    for a, b in [(5, 2), (2, 3), (3, 1), (1, 5)]:  # sos -> 2 -> 3 -> 1 -> eos
        trans[a, b] = -0.05
    model = FakeModel(trans, sos)
    hyps = attention_beam(model, torch.zeros(3, 10, 2), torch.tensor([10, 9, 8]), beam_size=2, sos_eos_id=sos)
    assert [h.tokens for h in hyps] == [(2, 3, 1)] * 3
    assert hyps[0].score == pytest.approx(-0.2, abs=1e-5)
    assert model.steps == 4  # stops once every beam has ended


def test_attention_rescoring_returns_an_nbest_entry() -> None:
    V, sos = 6, 5
    g = torch.Generator().manual_seed(3)
    model = FakeModel((torch.randn(V, V, generator=g) * 2).log_softmax(-1), sos)
    lp = _rand_lp(2, 30, 5, seed=4)
    lens = torch.tensor([30, 22])
    nbest = ctc_prefix_beam(lp, lens, beam_size=6)
    memory = torch.zeros(2, 30, 4)
    for w in (0.0, 0.5, 1e6):
        best = attention_rescoring(model, memory, lens, nbest, ctc_weight=w)
        att = model.attention_scores(memory, lens, [[list(h.tokens) for h in hs] for hs in nbest])
        for b, (h, hs) in enumerate(zip(best, nbest)):
            assert (h.tokens, h.times) in [(x.tokens, x.times) for x in hs]
            totals = [float(a) + w * x.score for a, x in zip(att[b], hs)]
            assert h.tokens == hs[max(range(len(hs)), key=totals.__getitem__)].tokens
            assert h.score == pytest.approx(max(totals))
        if w == 1e6:  # CTC dominates: the CTC best is kept
            assert [h.tokens for h in best] == [hs[0].tokens for hs in nbest]


def test_force_align_matches_brute_force_best_path() -> None:
    lp = _rand_lp(1, 6, 4, seed=11)[0]
    tokens = (2, 2, 3)
    best_path, best = None, -math.inf
    for path in itertools.product(range(4), repeat=6):
        if collapse(path) == tokens:
            s = sum(float(lp[t, u]) for t, u in enumerate(path))
            if s > best:
                best_path, best = path, s
    want = []
    for t, u in enumerate(best_path):
        if u != 0 and (t == 0 or best_path[t - 1] != u):
            want.append(t)
    assert ctc_force_align(lp, tokens) == want
    assert ctc_force_align(lp, (1, 1, 1, 1)) == []  # needs 7 frames
    assert ctc_force_align(lp, ()) == []


def test_force_align_on_greedy_path_gives_greedy_times() -> None:
    lp = _rand_lp(1, 50, 8, seed=5, scale=4.0)
    g = ctc_greedy(lp, torch.tensor([50]))[0]
    assert tuple(ctc_force_align(lp[0], g.tokens)) == g.times


def test_token_spans_seconds() -> None:
    spans = token_spans([5, 6, 7], [2, 3, 20], frame_shift=0.04, num_frames=22)
    assert [(s.token, s.start, s.end) for s in spans] == [(5, 0.08, 0.12), (6, 0.12, 0.28), (7, 0.8, 0.88)]


def test_hypothesis_type_is_shared() -> None:
    assert isinstance(ctc_greedy(_rand_lp(1, 3, 3, seed=0), torch.tensor([3]))[0], Hypothesis)
