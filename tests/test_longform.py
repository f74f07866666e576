"""Long audio: bounded memory while streaming through endpoints; segments match their parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qifusion.data.features import compute_fbank
from qifusion.decode.endpoint import EndpointConfig, EndpointRule
from qifusion.decode.longform import decode_long
from qifusion.decode.offline import decode_features
from qifusion.decode.recognizer import Recognizer
from tests.recognizer_helpers import make_random_model_dir, noise_utterance


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_model_dir(tmp_path_factory.mktemp("long") / "model", seed=2)


def test_long_audio_bounded_memory_and_segment_parity(model_dir: Path) -> None:
    """2 minutes of audio, chunk 16, left chunks 2, segments cut at 4 s (rule 3): caches, memory and
    fbank frames stay bounded, and every segment equals offline decoding of its own frames."""
    chunk, left = 16, 2
    ep = EndpointConfig(rule3=EndpointRule(False, 0.0, 4.0))
    rec = Recognizer.from_model_dir(model_dir, chunk_size=chunk, left_chunks=left, mode="attention_rescoring",
                                    endpoint=ep, dtype="float64", speech_gate=False)  # random model: no gate
    sr = 16000
    x = np.concatenate([noise_utterance(6.0, sr=sr, seed=i) for i in range(20)])  # 120 s
    sizes = {"att": 0, "mem": 0, "fbank": 0}
    orig = rec.decode_streams

    def spy(streams: list) -> None:
        orig(streams)
        for s in streams:
            sizes["att"] = max(sizes["att"], s.model_state.att_cache.shape[3])
            sizes["mem"] = max(sizes["mem"], sum(m.shape[0] for m in s.memory))
            sizes["fbank"] = max(sizes["fbank"], s.fbank.num_frames_ready - s.fbank._popped)

    rec.decode_streams = spy  # type: ignore[method-assign]
    res = decode_long(rec, ((sr, x[i : i + 4000]) for i in range(0, x.shape[0], 4000)))
    assert res.duration == pytest.approx(120.0)
    assert sizes["att"] <= chunk * left  # attention cache bounded by left chunks
    assert sizes["mem"] <= 4.0 / rec.frame_shift + chunk  # rescoring memory bounded by rule 3
    assert sizes["fbank"] <= rec.geometry.window + 4000 // 160 + 2  # consumed fbank frames are popped
    assert 24 <= len(res.segments) <= 31  # ~120 s / (4 s rounded up to chunks)
    assert res.accent in rec.accents
    feats = compute_fbank(x)
    for seg in res.segments[:3] + res.segments[-2:]:
        first = round(seg.start / rec.frame_shift) * rec.geometry.subsampling
        n_out = round((seg.end - seg.start) / rec.frame_shift)
        n_chunks = -(-n_out // chunk)
        last = min(first + (n_chunks - 1) * rec.geometry.stride + rec.geometry.window, feats.shape[0])
        hyp, _, _ = decode_features(rec, feats[first:last], chunk_size=chunk, left_chunks=left)
        assert seg.text == rec.tokenizer.decode(hyp.tokens)
        assert all(seg.start <= t < seg.end for t in seg.timestamps)


# Long audio with a trained model (pauses -> endpoints -> one segment per part): test_shipped_models.py
