"""Streaming Recognizer: parity with chunk-masked offline decoding, batching, reset, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from qifusion.data.features import compute_fbank
from qifusion.decode.offline import decode_features
from qifusion.decode.recognizer import Recognizer
from qifusion.errors import UserError
from tests.recognizer_helpers import make_random_model_dir, noise_utterance, run_stream

SR = 22050  # a non-16 kHz input rate: the stream resamples


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_model_dir(tmp_path_factory.mktemp("rand") / "model")


@pytest.mark.parametrize("mode", ["ctc_greedy", "attention_rescoring"])
@pytest.mark.parametrize(("chunk", "left"), [(4, -1), (16, -1), (4, 2)])
def test_streaming_equals_chunk_masked_offline(model_dir: Path, mode: str, chunk: int, left: int) -> None:
    rec = Recognizer.from_model_dir(model_dir, chunk_size=chunk, left_chunks=left, mode=mode, dtype="float64")
    for k, seconds in enumerate([1.37, 2.9, 4.02]):
        x = noise_utterance(seconds, sr=SR, seed=k)
        s = run_stream(rec, x, SR, seed=k)
        r = s.result
        hyp, accent, prob = decode_features(rec, compute_fbank(x, sample_rate=SR), chunk_size=chunk,
                                            left_chunks=left)
        assert r.is_final
        assert len(hyp.tokens) > 3  # a non-trivial transcript
        assert r.token_ids == list(hyp.tokens)
        assert r.text == rec.tokenizer.decode(hyp.tokens)
        assert r.accent == accent and r.accent_prob == pytest.approx(prob, abs=1e-9)
        if mode == "ctc_greedy":
            assert r.timestamps == pytest.approx([t * rec.frame_shift for t in hyp.times])
        assert s.duration == pytest.approx(seconds, abs=1e-4)


def test_partials_grow_and_prefix_beam_matches(model_dir: Path) -> None:
    rec = Recognizer.from_model_dir(model_dir, chunk_size=8, mode="ctc_prefix_beam", rescore=False)
    x = noise_utterance(3.0, sr=16000, seed=7)
    s = rec.create_stream()
    partial_lens = []
    for i in range(0, x.shape[0], 1600):  # 100 ms pieces
        s.accept_waveform(16000, x[i : i + 1600])
        while rec.is_ready(s):
            rec.decode(s)
        assert not s.result.is_final
        partial_lens.append(len(s.result.tokens))
    s.input_finished()
    while rec.is_ready(s):
        rec.decode(s)
    assert partial_lens[0] == 0 and partial_lens[-1] > 0
    assert s.result.accent in rec.accents and 0 < s.result.accent_prob <= 1
    hyp, _, _ = decode_features(rec, compute_fbank(x), chunk_size=8, left_chunks=-1)
    assert s.result.token_ids == list(hyp.tokens)


def test_decode_streams_batched_equals_individual(model_dir: Path) -> None:
    rec = Recognizer.from_model_dir(model_dir, chunk_size=4, left_chunks=3, mode="ctc_greedy",
                                    dtype="float64")
    audios = [noise_utterance(s, sr=16000, seed=10 + i) for i, s in enumerate([2.1, 3.3, 1.2, 2.6])]
    starts = [0, 5, 9, 2]  # streams start at different times (different cache lengths/offsets)
    singles = [run_stream(rec, x, 16000).result for x in audios]
    streams = [rec.create_stream() for _ in audios]
    pos = [0] * len(audios)
    step, batched_calls = 0, 0
    while not all(s.result.is_final for s in streams):
        for i, (s, x) in enumerate(zip(streams, audios)):
            if step >= starts[i] and not s.is_input_finished:
                s.accept_waveform(16000, x[pos[i] : pos[i] + 1600])
                pos[i] += 1600
                if pos[i] >= x.shape[0]:
                    s.input_finished()
        ready = [s for s in streams if rec.is_ready(s)]
        while ready:
            batched_calls += len(ready) > 1
            rec.decode_streams(ready)
            ready = [s for s in streams if rec.is_ready(s)]
        step += 1
    assert batched_calls > 3
    for s, single in zip(streams, singles):
        assert s.result.token_ids == single.token_ids
        assert s.result.accent_prob == pytest.approx(single.accent_prob, abs=1e-9)


def test_finals_of_many_streams_rescored_in_one_batch_equal_individual(
        model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams that end in the same decode_streams call are finalised together (one padded
    attention-rescoring batch) and give the same finals as one by one."""
    import qifusion.decode.recognizer as recognizer_mod

    rec = Recognizer.from_model_dir(model_dir, chunk_size=4, mode="attention_rescoring", dtype="float64")
    audios = [noise_utterance(s, sr=16000, seed=20 + i) for i, s in enumerate([2.0, 2.0, 2.0, 1.1])]
    singles = [run_stream(rec, x, 16000).result for x in audios]
    batches: list[int] = []
    real = recognizer_mod.finalize

    def spy(model, nbest, *args, **kwargs):
        batches.append(len(nbest))
        return real(model, nbest, *args, **kwargs)

    monkeypatch.setattr(recognizer_mod, "finalize", spy)
    streams = [rec.create_stream() for _ in audios]
    for s, x in zip(streams, audios):
        s.accept_waveform(16000, x)
        s.input_finished()
    while ready := [s for s in streams if rec.is_ready(s)]:
        rec.decode_streams(ready)
    assert max(batches) == 3  # the three 2 s streams end together
    assert any(single.token_ids for single in singles)  # a real comparison
    for s, single in zip(streams, singles):
        assert s.result.is_final and s.result.token_ids == single.token_ids


def test_reset_continues_with_fresh_segment(model_dir: Path) -> None:
    rec = Recognizer.from_model_dir(model_dir, chunk_size=4, mode="ctc_greedy", dtype="float64")
    x = np.concatenate([noise_utterance(1.5, sr=16000, seed=1), noise_utterance(2.0, sr=16000, seed=2)])
    feats = compute_fbank(x)
    s = rec.create_stream()
    s.accept_waveform(16000, x[:24000])
    while rec.is_ready(s):
        rec.decode(s)
    first_text = s.result.text
    cut = s.next_frame  # fbank frame where the next segment starts
    seg = rec.reset(s)
    assert seg.text == first_text and seg.start == 0.0
    assert seg.end == pytest.approx(cut // rec.geometry.subsampling * rec.frame_shift)
    assert s.result.text == "" and s.result.segments == [seg]
    run_stream(rec, x[24000:], 16000, stream=s)
    hyp, _, _ = decode_features(rec, feats[cut:], chunk_size=4, left_chunks=-1)
    assert s.result.token_ids == list(hyp.tokens) and len(hyp.tokens) > 0
    assert s.result.start == pytest.approx(seg.end)
    assert s.result.timestamps[0] >= seg.end


def test_endpoint_fires_on_max_length(model_dir: Path) -> None:
    from qifusion.decode.endpoint import EndpointConfig, EndpointRule

    ep = EndpointConfig(rule3=EndpointRule(False, 0.0, 1.0))
    rec = Recognizer.from_model_dir(model_dir, chunk_size=4, mode="ctc_greedy", endpoint=ep)
    s = rec.create_stream()
    s.accept_waveform(16000, noise_utterance(0.9, sr=16000, seed=3))
    while rec.is_ready(s):
        rec.decode(s)
    assert not rec.is_endpoint(s)
    s.accept_waveform(16000, noise_utterance(0.5, sr=16000, seed=4))
    while rec.is_ready(s):
        rec.decode(s)
    assert rec.is_endpoint(s)
    rec.reset(s)
    assert not rec.is_endpoint(s)


def test_errors(model_dir: Path) -> None:
    with pytest.raises(UserError, match="unknown decoding mode 'beam'"):
        Recognizer.from_model_dir(model_dir, mode="beam")
    with pytest.raises(UserError, match="positive chunk size"):
        Recognizer.from_model_dir(model_dir, chunk_size=-1)
    with pytest.raises(UserError, match=r"backend 'onnx' is not available|no ONNX export"):
        Recognizer.from_model_dir(model_dir, backend="onnx")
    with pytest.raises(UserError, match="does not exist"):
        Recognizer.from_model_dir(model_dir / "nope")
    rec = Recognizer.from_model_dir(model_dir, chunk_size=4)
    s = rec.create_stream()
    s.accept_waveform(16000, np.zeros(800, dtype=np.float32))
    s.input_finished()
    with pytest.raises(RuntimeError, match="after input_finished"):
        s.accept_waveform(16000, np.zeros(10, dtype=np.float32))
    while rec.is_ready(s):
        rec.decode(s)
    assert s.result.is_final and torch.is_tensor(torch.tensor(s.result.token_ids))


def test_chunk_steps_run_with_chunk_threads_and_restore(model_dir: Path) -> None:
    """config.chunk_threads sets torch's intra-op threads around each chunk step only."""
    rec = Recognizer.from_model_dir(model_dir, chunk_size=8, chunk_threads=1)
    seen: list[int] = []
    real = rec.model.step

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    rec.model.step = spy
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_stream(rec, noise_utterance(1.5, sr=16000, seed=3), 16000)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(UserError, match="chunk_threads"):
        Recognizer.from_model_dir(model_dir, chunk_threads=0)
