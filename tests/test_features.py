"""Fbank (offline vs streaming parity, sherpa-onnx settings, independent check) and CMVN."""

import json
import math

import numpy as np
import pytest
import torch

from qifusion.data.cmvn import compute_cmvn, load_cmvn, save_cmvn
from qifusion.data.features import OnlineFbank, compute_fbank, fbank_options
from qifusion.errors import DataError, UserError


def _signal(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    return (x + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def _online(x: np.ndarray, sr: int, seed: int) -> torch.Tensor:
    """Feed ``x`` in random-size pieces; read frames as they become ready (like a recognizer)."""
    rng = np.random.default_rng(seed)
    fb = OnlineFbank(80)
    frames, got, i = [], 0, 0
    while i < x.size:
        n = int(rng.integers(1, 4000))
        fb.accept_waveform(sr, x[i : i + n])
        i += n
        ready = fb.num_frames_ready
        if ready > got:
            frames.append(fb.get_frames(got, ready - got))
            got = ready
    fb.input_finished()
    frames.append(fb.get_frames(got, fb.num_frames_ready - got))
    return torch.cat(frames)


@pytest.mark.parametrize("sr", [16000, 8000, 44100])
def test_online_chunked_equals_offline(sr):
    x = _signal(1.37, sr)
    offline = compute_fbank(x, sample_rate=sr)
    for seed in (1, 2):
        online = _online(x, sr, seed)
        assert online.shape == offline.shape
        assert offline.shape[1] == 80
        assert float((online - offline).abs().max()) < 1e-4


def test_frame_count_snip_edges_false():
    # snip_edges=False: one frame per 10 ms shift, centred, rounded: (N + 80) // 160
    for n in (16000, 16079, 16080, 400, 1):
        assert compute_fbank(np.zeros(n, dtype=np.float32) + 0.01).shape == ((n + 80) // 160, 80)


def test_options_match_sherpa_onnx_wenet_ctc():
    o = fbank_options()
    assert o.frame_opts.samp_freq == 16000
    assert o.frame_opts.frame_length_ms == 25 and o.frame_opts.frame_shift_ms == 10
    assert o.frame_opts.dither == 0 and not o.frame_opts.snip_edges
    assert o.frame_opts.window_type == "povey" and o.frame_opts.remove_dc_offset
    assert o.mel_opts.num_bins == 80 and o.mel_opts.low_freq == 20 and o.mel_opts.high_freq == -400
    assert not o.use_energy


def test_matches_lhotse_kaldi_fbank_at_int16_scale():
    """Independent implementation (lhotse's torch Kaldi fbank on [-1, 1] samples): ours is the same
    log-mel of samples scaled by 32768, i.e. shifted by 2*ln(32768) in every cell."""
    from lhotse.features.kaldi.extractors import Fbank, FbankConfig

    x = _signal(1.03, 16000, seed=3)
    ours = compute_fbank(x)
    ref = torch.as_tensor(Fbank(FbankConfig(num_filters=80)).extract(x, 16000))
    assert ours.shape == ref.shape
    assert float((ours - ref - 2 * math.log(32768)).abs().max()) < 1e-3


def test_dither_is_seeded_and_small():
    x = _signal(0.5, 16000)
    a = compute_fbank(x, dither=1.0, rng=np.random.default_rng(7))
    b = compute_fbank(x, dither=1.0, rng=np.random.default_rng(7))
    c = compute_fbank(x, dither=1.0, rng=np.random.default_rng(8))
    clean = compute_fbank(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert 0 < float((a - clean).abs().mean()) < 0.05


def test_bad_input_shapes():
    with pytest.raises(DataError, match="mono"):
        compute_fbank(np.zeros((2, 100), dtype=np.float32))
    fb = OnlineFbank()
    fb.accept_waveform(16000, np.zeros(800, dtype=np.float32))
    with pytest.raises(DataError, match="sample rate changed"):
        fb.accept_waveform(8000, np.zeros(800, dtype=np.float32))
    with pytest.raises(IndexError):
        fb.get_frames(0, fb.num_frames_ready + 1)


def test_pop_keeps_absolute_indices():
    x = _signal(1.0, 16000)
    fb = OnlineFbank()
    fb.accept_waveform(16000, x)
    fb.input_finished()
    ref = compute_fbank(x)
    fb.pop(50)
    assert fb.num_frames_ready == ref.shape[0]
    assert torch.equal(fb.get_frames(50, 10), ref[50:60])
    with pytest.raises(IndexError):
        fb.get_frames(49, 1)


def test_cmvn_stats_and_roundtrip(tmp_path):
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(30, 80, generator=g) * 3 + 5, torch.randn(17, 80, generator=g) * 2 - 1]
    mean, istd = compute_cmvn(feats)
    allf = torch.cat(feats).double()
    assert torch.allclose(mean.double(), allf.mean(0), atol=1e-5)
    assert torch.allclose(istd.double(), 1 / allf.std(0, unbiased=False), rtol=1e-4)
    path = save_cmvn(tmp_path, mean, istd, frame_num=47)
    assert path.name == "cmvn.json" and json.loads(path.read_text())["frame_num"] == 47
    m2, i2 = load_cmvn(tmp_path)
    assert torch.equal(m2, mean) and torch.equal(i2, istd)
    assert [p.name for p in tmp_path.iterdir()] == ["cmvn.json"]  # atomic write leaves no temp file


def test_cmvn_errors(tmp_path):
    with pytest.raises(DataError, match="no feature frames"):
        compute_cmvn([])
    with pytest.raises(UserError, match="not found"):
        load_cmvn(tmp_path / "missing.json")
    (tmp_path / "cmvn.json").write_text('{"mean": [1, 2]}')
    with pytest.raises(UserError, match="malformed"):
        load_cmvn(tmp_path)
