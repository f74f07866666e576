"""Streaming Conformer encoder: chunk parity, causality, padding invariance, batched streams, masks."""

from __future__ import annotations

import pytest
import torch

from qifusion.config import ConfigError, EncoderConfig
from qifusion.models.attention import rel_shift
from qifusion.models.conformer import ConformerEncoder
from qifusion.models.frontend import RelPositionalEncoding
from qifusion.models.mask import chunk_mask, dynamic_chunk, lengths_to_mask
from qifusion.models.mha import MultiHeadAttention


def tiny_cfg(**kw) -> EncoderConfig:
    base = dict(
        output_size=32,
        attention_heads=4,
        linear_units=64,
        num_blocks=2,
        cnn_module_kernel=5,
        dropout_rate=0.0,
        positional_dropout_rate=0.0,
    )
    base.update(kw)
    return EncoderConfig(**base)


def make_encoder(*, dtype=torch.float32, trained_scale=False, seed=0, **kw) -> ConformerEncoder:
    torch.manual_seed(seed)
    enc = ConformerEncoder(tiny_cfg(**kw)).to(dtype).eval()
    if trained_scale:
        # weights and CMVN far from the init: large pre-softmax scores, fbank-like inputs
        with torch.no_grad():
            for name, p in enc.named_parameters():
                if "norm" in name:
                    p.add_(0.5 * torch.randn_like(p))
                else:
                    p.mul_(2.5)
            enc.set_cmvn(10.0 + 3.0 * torch.randn(80, dtype=dtype), 0.2 + torch.rand(80, dtype=dtype))
    return enc


def feats(B: int, T: int, *, dtype=torch.float32, seed=1, trained_scale=False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 80, generator=g, dtype=dtype)
    return 10.0 + 3.0 * x if trained_scale else x


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def stream(enc, x, chunk, left_chunks, *, att_mask_zero_cache=False):
    """Feed (B,T,F) chunk by chunk; returns out (B,T',D) and hidden list, concatenated over chunks."""
    rate, rc = enc.subsampling_rate, enc.right_context
    t_in, stride = (chunk - 1) * rate + rc + 1, chunk * rate
    req = -1 if left_chunks < 0 else left_chunks * chunk
    B = x.size(0)
    att, cnn = enc.init_cache(B, dtype=x.dtype)
    valid = None
    if att_mask_zero_cache:  # sherpa-onnx style: fixed-size zero-filled cache, masked
        att = torch.zeros(enc.num_blocks, B, enc.num_heads, req, 2 * enc.d_k, dtype=x.dtype)
        valid = torch.zeros(B, req, dtype=torch.bool)
    outs, hid = [], [[] for _ in range(enc.num_blocks)]
    s = 0
    with torch.no_grad():
        while x.size(1) - s >= rc + 1:
            xs = x[:, s : s + t_in]
            n_out = (xs.size(1) - rc - 1) // rate + 1
            mask = None
            if valid is not None:
                mask = torch.cat([valid, torch.ones(B, n_out, dtype=torch.bool)], dim=1)
            o, h, att, cnn = enc.forward_chunk(xs, s // rate, req, att, cnn, mask)
            if valid is not None:
                valid = mask[:, mask.size(1) - att.size(3) :]
            outs.append(o)
            for i, t in enumerate(h):
                hid[i].append(t)
            s += stride
    return torch.cat(outs, 1), [torch.cat(h, 1) for h in hid]


@pytest.mark.parametrize("trained_scale", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-9)])
@pytest.mark.parametrize("left_chunks", [-1, 2])
@pytest.mark.parametrize("chunk", [1, 4, 16])
def test_streaming_equals_chunk_masked_forward(chunk, left_chunks, dtype, tol, trained_scale):
    enc = make_encoder(dtype=dtype, trained_scale=trained_scale)
    x = feats(1, 203, dtype=dtype, trained_scale=trained_scale)
    full = enc(x, torch.tensor([203]), chunk_size=chunk, left_chunks=left_chunks)
    assert full.chunk_size == chunk and full.left_chunks == left_chunks
    out, hidden = stream(enc, x, chunk, left_chunks)
    assert out.shape == full.out.shape == (1, 50, 32)
    assert rel_err(out, full.out) <= tol
    assert len(hidden) == len(full.hidden) == 2
    for h, fh in zip(hidden, full.hidden):
        assert rel_err(h, fh) <= tol
    # the chunk mask matters: full context gives different numbers (so the test can fail)
    if chunk < 50:
        other = enc(x, torch.tensor([203]), chunk_size=-1).out
        assert rel_err(other, full.out) > 1e-3


def test_zero_filled_masked_cache_matches_left_chunk_forward():
    """sherpa-onnx feeds a fixed-size zero cache plus att_mask; results equal the left-chunk forward."""
    enc = make_encoder(trained_scale=True)
    x = feats(1, 203, trained_scale=True)
    full = enc(x, torch.tensor([203]), chunk_size=4, left_chunks=2)
    out, _ = stream(enc, x, 4, 2, att_mask_zero_cache=True)
    n = out.size(1)
    assert n >= 44
    assert rel_err(out, full.out[:, :n]) <= 1e-4


@pytest.mark.parametrize("subsampling,rate,rc", [("conv2d6", 6, 10), ("conv2d8", 8, 14)])
def test_other_front_ends_stream(subsampling, rate, rc):
    enc = make_encoder(subsampling=subsampling, dtype=torch.float64)
    assert (enc.subsampling_rate, enc.right_context) == (rate, rc)
    x = feats(1, 190, dtype=torch.float64)
    full = enc(x, torch.tensor([190]), chunk_size=3, left_chunks=-1)
    assert full.out.size(1) == (190 - rc - 1) // rate + 1
    out, _ = stream(enc, x, 3, -1)
    assert rel_err(out, full.out) <= 1e-9


def test_narrow_front_end_streams_and_keeps_its_shapes():
    """``subsampling_channels`` narrows the sub-sampling convs only: the encoder width, the chunk geometry
    and stateful streaming == the masked forward are unchanged."""
    enc = make_encoder(subsampling_channels=8, dtype=torch.float64)
    assert enc.embed.conv_in.out_channels == 8 and enc.embed.convs[0].weight.shape[:2] == (8, 8)
    assert enc.embed.out.out_features == enc.output_size
    x = feats(1, 150, dtype=torch.float64)
    full = enc(x, torch.tensor([150]), chunk_size=4, left_chunks=-1)
    out, _ = stream(enc, x, 4, -1)
    assert out.shape == full.out.shape
    assert rel_err(out, full.out) <= 1e-9
    with pytest.raises(ConfigError, match="subsampling_channels"):
        make_encoder(subsampling_channels=-1)


@pytest.mark.parametrize("chunk", [1, 4])
def test_causality(chunk):
    enc = make_encoder(trained_scale=True)
    T, k = 160, 3  # perturb everything after the input that chunk k may read
    x = feats(1, T, trained_scale=True)
    rate, rc = enc.subsampling_rate, enc.right_context
    last_in = rate * ((k + 1) * chunk - 1) + rc
    y = x.clone()
    y[:, last_in + 1 :] += 5.0 * torch.randn_like(y[:, last_in + 1 :])
    a = enc(x, torch.tensor([T]), chunk_size=chunk)
    b = enc(y, torch.tensor([T]), chunk_size=chunk)
    n = (k + 1) * chunk
    for ta, tb in zip([a.out, *a.hidden], [b.out, *b.hidden]):
        assert (ta[:, :n] - tb[:, :n]).abs().max().item() <= 1e-6 * ta.abs().max().item()
        assert (ta[:, n:] - tb[:, n:]).abs().max().item() > 1e-2  # the perturbation is visible later
    # one more input frame is inside chunk k's receptive field
    z = x.clone()
    z[:, last_in] += 5.0
    c = enc(z, torch.tensor([T]), chunk_size=chunk)
    assert (c.out[:, n - 1] - a.out[:, n - 1]).abs().max().item() > 1e-3


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("chunk", [-1, 4])
def test_padding_invariance(causal, chunk):
    enc = make_encoder(causal=causal, trained_scale=True)
    lens = [181, 144, 97]
    x = feats(3, 181, trained_scale=True)
    x_pad = x.clone()
    for b, n in enumerate(lens):
        x_pad[b, n:] = 1e3  # garbage in the padding
    batch = enc(x_pad, torch.tensor(lens), chunk_size=chunk)
    for b, n in enumerate(lens):
        alone = enc(x[b : b + 1, :n], torch.tensor([n]), chunk_size=chunk)
        m = alone.out.size(1)
        assert int(batch.mask[b].sum()) == m
        assert not batch.mask[b, m:].any()
        assert rel_err(batch.out[b : b + 1, :m], alone.out) <= 1e-5
        for hb, ha in zip(batch.hidden, alone.hidden):
            assert rel_err(hb[b : b + 1, :m], ha) <= 1e-5


def _left_pad(cache: torch.Tensor, size: int) -> torch.Tensor:
    pad = cache.new_zeros(*cache.shape[:3], size - cache.size(3), cache.size(4))
    return torch.cat([pad, cache], dim=3)


@pytest.mark.parametrize("required", [-1, 8])
def test_batched_streams_of_different_lengths(required):
    """Stream A has 3 chunks of history, B has 1: one batched call equals two single calls."""
    enc = make_encoder(trained_scale=True)
    chunk, rate, rc = 4, enc.subsampling_rate, enc.right_context
    t_in, stride = (chunk - 1) * rate + rc + 1, chunk * rate
    xa, xb = feats(1, 200, seed=3, trained_scale=True), feats(1, 200, seed=4, trained_scale=True)
    states = []
    for x, n_hist in ((xa, 3), (xb, 1)):
        att, cnn = enc.init_cache(1)
        with torch.no_grad():
            for i in range(n_hist):
                xs = x[:, i * stride : i * stride + t_in]
                _, _, att, cnn = enc.forward_chunk(xs, 0, required, att, cnn)
        xs = x[:, n_hist * stride : n_hist * stride + t_in]
        with torch.no_grad():
            ref = enc.forward_chunk(xs, 0, required, att, cnn)
        states.append((xs, att, cnn, ref))
    size = max(s[1].size(3) for s in states)
    att = torch.cat([_left_pad(s[1], size) for s in states], dim=1)
    cnn = torch.cat([s[2] for s in states], dim=1)
    valid = torch.stack([torch.arange(size) >= size - s[1].size(3) for s in states])
    assert not valid.all()  # B's cache really is left-padded
    mask = torch.cat([valid, torch.ones(2, chunk, dtype=torch.bool)], dim=1)
    xs = torch.cat([s[0] for s in states])
    with torch.no_grad():
        out, hidden, new_att, new_cnn = enc.forward_chunk(xs, 0, required, att, cnn, mask)
    assert new_att.shape[:2] == (2, 2) and new_cnn.shape == (2, 2, 32, 4)
    for b, (_, _, _, ref) in enumerate(states):
        assert rel_err(out[b : b + 1], ref[0]) <= 1e-5
        for h, rh in zip(hidden, ref[1]):
            assert rel_err(h[b : b + 1], rh) <= 1e-5
        n = ref[2].size(3)
        assert rel_err(new_att[:, b : b + 1, :, new_att.size(3) - n :], ref[2]) <= 1e-5
        assert rel_err(new_cnn[:, b : b + 1], ref[3]) <= 1e-5


def test_required_cache_size_semantics():
    enc = make_encoder()
    x = feats(1, 67)
    att, cnn = enc.init_cache(1)
    assert att.shape == (2, 1, 4, 0, 16) and cnn.shape == (2, 1, 32, 4)
    for req, expect in ((-1, 16), (0, 0), (8, 8), (40, 16)):
        with torch.no_grad():
            out, hidden, new_att, new_cnn = enc.forward_chunk(x, 0, req, att, cnn)
        assert out.shape == (1, 16, 32) and len(hidden) == 2
        assert new_att.shape == (2, 1, 4, expect, 16) and new_cnn.shape == (2, 1, 32, 4)


def test_full_context_encoder_refuses_forward_chunk():
    enc = make_encoder(causal=False)
    att, cnn = enc.init_cache(1)
    with pytest.raises(ConfigError, match="causal"):
        enc.forward_chunk(feats(1, 67), 0, -1, att, cnn)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    enc = ConformerEncoder(tiny_cfg(dropout_rate=0.1)).train()
    out = enc(feats(2, 120), torch.tensor([120, 90]), chunk_size=4, left_chunks=1)
    (out.out.pow(2).sum() + sum(h.pow(2).sum() for h in out.hidden)).backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_cmvn_inside_and_checked():
    enc = make_encoder()
    x = feats(1, 60)
    mean, istd = torch.randn(80), torch.rand(80) + 0.5
    enc.set_cmvn(mean, istd)
    a = enc(x, torch.tensor([60]), chunk_size=-1).out
    enc.set_cmvn(torch.zeros(80), torch.ones(80))
    b = enc((x - mean) * istd, torch.tensor([60]), chunk_size=-1).out
    assert rel_err(a, b) <= 1e-5
    assert "cmvn.mean" in enc.state_dict()
    with pytest.raises(ConfigError, match="input_dim"):
        enc.set_cmvn(torch.zeros(40), torch.ones(40))


def test_bad_config_names_key():
    with pytest.raises(ConfigError, match=r"model\.encoder\.subsampling"):
        ConformerEncoder(tiny_cfg(subsampling="conv2d5"))
    with pytest.raises(ConfigError, match="attention_heads"):
        ConformerEncoder(tiny_cfg(attention_heads=5))


def test_chunk_mask_matches_definition():
    T, c, left = 11, 3, 1
    m = chunk_mask(T, c, left)
    for i in range(T):
        for j in range(T):
            assert bool(m[i, j]) == (j // c <= i // c and j // c >= i // c - left)
    assert chunk_mask(T, c, -1)[0].tolist() == [True] * 3 + [False] * 8
    assert chunk_mask(T, -1).all()
    assert lengths_to_mask(torch.tensor([2, 0, 3])).tolist() == [
        [True, True, False],
        [False, False, False],
        [True, True, True],
    ]


def test_rel_shift_picks_distance_i_minus_j():
    Tq, Tk = 3, 5
    dist_of_col = torch.arange(Tk - 1, -Tq - 1, -1, dtype=torch.float32)  # Tk-1 .. -Tq
    scores = dist_of_col.expand(1, 1, Tq, Tq + Tk).contiguous()
    out = rel_shift(scores, Tk)[0, 0]
    expect = torch.tensor([[(Tk - Tq + i) - j for j in range(Tk)] for i in range(Tq)], dtype=torch.float32)
    assert torch.equal(out, expect)


def test_dynamic_chunk_policy_uses_global_rng():
    kw = dict(use_dynamic_chunk=True, use_dynamic_left_chunk=True, max_chunk=25, static_chunk_size=0)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    draws = [dynamic_chunk(200, training=True, **kw) for _ in range(200)]
    torch.set_rng_state(state)
    assert draws == [dynamic_chunk(200, training=True, **kw) for _ in range(200)]
    chunks = {c for c, _ in draws}
    assert -1 in chunks and chunks - {-1} <= set(range(1, 26)) and len(chunks) > 15
    assert 60 < sum(c == -1 for c, _ in draws) < 140
    assert all(left == -1 for c, left in draws if c == -1)
    assert {left for c, left in draws if c > 0} >= {0, 1}
    assert dynamic_chunk(200, training=False, **kw) == (-1, -1)
    assert dynamic_chunk(200, training=True, **{**kw, "static_chunk_size": 8}) == (8, -1)
    assert dynamic_chunk(200, training=True, **{**kw, "use_dynamic_chunk": False}) == (-1, -1)


def test_training_forward_draws_chunk_and_returns_mask():
    enc = make_encoder().train()
    torch.manual_seed(11)
    seen = {enc(feats(2, 120), torch.tensor([120, 100])).chunk_size for _ in range(12)}
    assert -1 in seen and len(seen) > 2
    enc.eval()
    out = enc(feats(2, 120), torch.tensor([120, 100]))
    assert out.chunk_size == -1 and out.chunk_mask.shape == (2, 29, 29)
    assert out.chunk_mask[1, 0, :24].all() and not out.chunk_mask[1, 0, 24:].any()


def test_plain_mha_cross_attention_mask():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4).eval()
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2]).unsqueeze(1)  # (B, 1, T_k)
    out = mha(q, kv, kv, mask)
    ref = mha(q[1:], kv[1:, :3], kv[1:, :3], None)
    assert out.shape == (2, 3, 16)
    assert (out[1:] - ref).abs().max().item() < 1e-6


def test_relative_positions_grow_on_demand_and_stay_out_of_state_dict():
    small, big = RelPositionalEncoding(8, init_len=4), RelPositionalEncoding(8, init_len=50)
    like = torch.zeros(1, dtype=torch.float64)
    out = small(3, 10, like=like)  # distances 9 .. -3, beyond the initial table
    assert out.shape == (13, 8) and out.dtype == torch.float64
    assert torch.equal(out, big(3, 10, like=like))
    assert out[9].tolist() == [0.0, 1.0] * 4  # distance 0
    assert torch.allclose(out[0, 0], torch.sin(torch.tensor(9.0, dtype=torch.float64)))
    assert not [k for k in make_encoder().state_dict() if "pos_enc" in k]


def _chunks(enc, x, chunk):
    rate, rc = enc.subsampling_rate, enc.right_context
    t_in, stride = (chunk - 1) * rate + rc + 1, chunk * rate
    return [x[:, s : s + t_in] for s in range(0, x.size(1) - t_in + 1, stride)]


@pytest.mark.parametrize("macaron", [True, False])
@pytest.mark.parametrize("required", [-1, 8])
def test_inference_fast_path_equals_module_path(required, macaron):
    """forward_chunk without autograd (fast path) == with autograd (module path), per chunk, float64,
    two streams with a left-padded masked cache; re-using an older cache (a branch) is not corrupted."""
    enc = make_encoder(dtype=torch.float64, trained_scale=True, macaron=macaron)
    x = feats(2, 120, dtype=torch.float64, trained_scale=True)
    pad = 4
    att = torch.zeros(2, 2, 4, pad, 16, dtype=torch.float64)
    cnn = torch.zeros(0, dtype=torch.float64)
    valid = torch.tensor([[False] * pad, [False, False, True, True]])
    fast_state = slow_state = (att, cnn, valid)
    saved = None
    for i, xs in enumerate(_chunks(enc, x, 4)):
        outs = []
        for state, grad in ((fast_state, False), (slow_state, True)):
            a, c, v = state
            mask = torch.cat([v, torch.ones(2, 4, dtype=torch.bool)], dim=1)
            with torch.set_grad_enabled(grad):
                o, h, a2, c2 = enc.forward_chunk(xs, 0, required, a, c, mask)
            outs.append(([o, *h, a2, c2], (a2, c2, mask[:, mask.size(1) - a2.size(3) :])))
        (fast, fast_state), (slow, slow_state) = outs
        for f, s in zip(fast, slow):
            assert f.shape == s.shape
            assert rel_err(f, s.detach()) <= 1e-12
        if i == 2:
            saved = (xs, fast_state, [t.clone() for t in fast_state[:2]])
    assert isinstance(enc._fast_weights.pos_proj, torch.Tensor)  # the fast path really ran
    # branch: the cache of chunk 2 again (the fast path appended after it since) gives the module result
    xs, (a, c, v), (a_copy, c_copy) = saved
    last, last_copy = fast_state[0], fast_state[0].clone()
    mask = torch.cat([v, torch.ones(2, 4, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        again = enc.forward_chunk(xs, 0, required, a, c, mask)
    assert torch.equal(last, last_copy)  # the branch did not write into the newest stream's cache
    with torch.enable_grad():
        ref = enc.forward_chunk(xs, 0, required, a_copy, c_copy, mask)
    assert torch.equal(a, a_copy) and torch.equal(c, c_copy)  # handed-out caches never change
    assert rel_err(again[0], ref[0].detach()) <= 1e-12
    assert rel_err(again[2], ref[2].detach()) <= 1e-12


def test_fast_path_follows_weight_updates():
    enc = make_encoder(dtype=torch.float64)
    x = feats(1, 67, dtype=torch.float64)
    att, cnn = enc.init_cache(1, dtype=torch.float64)
    with torch.no_grad():
        before = enc.forward_chunk(x, 0, -1, att, cnn)[0]
        for name, p in enc.named_parameters():
            if any(k in name for k in ("linear_qkv", "pos_bias", "linear_pos", "depthwise", "embed.convs")):
                p.mul_(1.5)
        after = enc.forward_chunk(x, 0, -1, att, cnn)[0]
    with torch.enable_grad():
        ref = enc.forward_chunk(x, 0, -1, att, cnn)[0].detach()
    assert rel_err(after, ref) <= 1e-12
    assert rel_err(before, ref) > 1e-3


def test_fast_path_follows_dtype_and_replaced_blocks():
    """The fast path's derived weights follow ``to(dtype)`` and a replaced block (new parameters)."""
    enc = make_encoder(dtype=torch.float64)
    x = feats(1, 67, dtype=torch.float64)

    def both(e: ConformerEncoder, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        att, cnn = e.init_cache(1, dtype=xs.dtype)
        with torch.no_grad():
            fast = e.forward_chunk(xs, 0, -1, att, cnn)[0]
        with torch.enable_grad():
            slow = e.forward_chunk(xs, 0, -1, att, cnn)[0].detach()
        return fast, slow

    fast, slow = both(enc, x)
    assert fast.dtype == torch.float64 and rel_err(fast, slow) <= 1e-12
    enc.to(torch.float32)
    fast, slow = both(enc, x.float())
    assert fast.dtype == torch.float32 and rel_err(fast, slow) <= 1e-5
    other = make_encoder(seed=5)
    enc.blocks[1] = other.blocks[1]
    fast, slow = both(enc, x.float())
    assert rel_err(fast, slow) <= 1e-5
