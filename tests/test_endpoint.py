"""Endpoint rules on synthetic blank-probability sequences, and the step-wise CTC searches."""

import math

import pytest
import torch

from qifusion.decode.endpoint import EndpointConfig, EndpointRule, SilenceTracker
from qifusion.decode.streaming_search import CtcGreedyState, CtcPrefixBeamState

SHIFT = 0.04  # 40 ms per output frame (x4 sub-sampling)


def _blank_logp(pattern: list[tuple[float, int]]) -> torch.Tensor:
    """(P(blank), number of frames) runs -> (T',) blank log-probabilities."""
    return torch.cat([torch.full((n,), math.log(p)) for p, n in pattern])


def _feed(tracker: SilenceTracker, pattern: list[tuple[float, int]], *, chunk: int = 4) -> None:
    x = _blank_logp(pattern)
    for i in range(0, x.shape[0], chunk):
        tracker.update(x[i : i + chunk])


def test_rule1_silence_only_needs_2_4s() -> None:
    t = SilenceTracker(EndpointConfig(), frame_shift=SHIFT)
    _feed(t, [(0.99, 59)])  # 2.36 s
    assert not t.is_endpoint(has_speech=False)
    _feed(t, [(0.99, 1)])  # 2.40 s
    assert t.trailing_silence == pytest.approx(2.4)
    assert t.is_endpoint(has_speech=False)


def test_rule2_after_speech_needs_1_2s_and_speech() -> None:
    t = SilenceTracker(EndpointConfig(), frame_shift=SHIFT)
    _feed(t, [(0.99, 10), (0.1, 20), (0.95, 29)])  # speech then 1.16 s silence
    assert t.trailing_blank_frames == 29
    assert not t.is_endpoint(has_speech=True)
    _feed(t, [(0.95, 1)])  # 1.20 s
    assert t.is_endpoint(has_speech=True)
    assert not t.is_endpoint(has_speech=False)  # rule 1 needs 2.4 s without speech


def test_speech_frame_resets_trailing_silence_and_threshold() -> None:
    t = SilenceTracker(EndpointConfig(blank_threshold=0.8), frame_shift=SHIFT)
    _feed(t, [(0.9, 25), (0.79, 1), (0.9, 5)])  # 0.79 < threshold: not silent
    assert t.trailing_blank_frames == 5
    assert t.num_frames == 31


def test_rule3_max_utterance_length() -> None:
    t = SilenceTracker(EndpointConfig(), frame_shift=SHIFT)
    _feed(t, [(0.1, 499)])  # 19.96 s of speech
    assert not t.is_endpoint(has_speech=True)
    _feed(t, [(0.1, 1)])
    assert t.utterance_length == pytest.approx(20.0)
    assert t.is_endpoint(has_speech=True)
    t.reset()
    assert t.num_frames == 0 and not t.is_endpoint(has_speech=True)


def test_custom_rules() -> None:
    cfg = EndpointConfig(rule1=EndpointRule(False, 0.5, 0.0), rule2=EndpointRule(True, 0.2, 1.0),
                         rule3=EndpointRule(False, 0.0, 0.0))
    assert cfg.is_endpoint(has_speech=False, trailing_silence=0.0, utterance_length=0.0)  # rule3 = 0 s
    cfg.rule3 = EndpointRule(False, 0.0, 100.0)
    assert not cfg.is_endpoint(has_speech=True, trailing_silence=0.3, utterance_length=0.9)
    assert cfg.is_endpoint(has_speech=True, trailing_silence=0.3, utterance_length=1.0)


def _peaky(T: int, V: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, V, generator=g) * 3
    logits[:, 0] += 2.0  # blank-heavy like real CTC output
    return logits.log_softmax(-1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prefix_beam_chunking_invariant_and_matches_batched_search(seed: int) -> None:
    from qifusion.decode.ctc_search import ctc_prefix_beam

    lp = _peaky(60, 12, seed)
    whole = CtcPrefixBeamState(beam_size=5)
    whole.step(lp)
    pieces = CtcPrefixBeamState(beam_size=5)
    for a, b in [(0, 7), (7, 8), (8, 30), (30, 60)]:
        pieces.step(lp[a:b])
    assert [h.tokens for h in whole.nbest()] == [h.tokens for h in pieces.nbest()]
    assert [h.times for h in whole.nbest()] == [h.times for h in pieces.nbest()]
    ref = ctc_prefix_beam(lp[None], torch.tensor([60]), beam_size=5)[0]
    assert [h.tokens for h in whole.nbest()] == [h.tokens for h in ref]
    assert [h.score for h in whole.nbest()] == pytest.approx([h.score for h in ref], abs=1e-9)


def test_prefix_beam_1_equals_greedy() -> None:
    lp = _peaky(80, 9, 5)
    beam = CtcPrefixBeamState(beam_size=1, token_topk=1)
    greedy = CtcGreedyState()
    for a in range(0, 80, 16):
        beam.step(lp[a : a + 16])
        greedy.step(lp[a : a + 16])
    assert beam.nbest()[0].tokens == greedy.nbest()[0].tokens
    assert len(greedy.nbest()[0].tokens) > 3
    assert beam.nbest()[0].times == greedy.nbest()[0].times
