"""Unit tests of the accent parts and heads alone, on random "encoder block outputs"."""

from __future__ import annotations

import math

import pytest
import torch

from qifusion.config import AccentConfig, DecoderConfig
from qifusion.models.aid import aid_accuracy, aid_loss, utterance_posterior
from qifusion.models.decoder import (
    TransformerDecoder,
    add_sos_eos,
    label_smoothing_loss,
    reverse_tokens,
)
from qifusion.models.fusion import AccentFusion
from qifusion.models.laf import LayerAdaptedFusion
from qifusion.models.mask import chunk_mask

D, E, NB = 16, 12, 4


def _acfg(**kw) -> AccentConfig:
    base = dict(
        laf_layers=[2, 3, 4], laf_kernel=3, laf_channels=2, embed_dim=E, fusion_heads=2, dropout_rate=0.0
    )
    base.update(kw)
    return AccentConfig(**base)


def _hidden(b: int, t: int) -> list[torch.Tensor]:
    return [torch.randn(b, t, D, dtype=torch.float64) for _ in range(NB)]


def test_laf_weights_are_softmax_and_used() -> None:
    torch.manual_seed(0)
    laf = LayerAdaptedFusion(_acfg(), D).double().eval()
    w = laf.weights()
    assert w.shape == (3,) and torch.allclose(w.sum(), torch.tensor(1.0, dtype=w.dtype))
    h = _hidden(2, 9)
    y0, _ = laf(h)
    with torch.no_grad():
        laf.layer_logits.copy_(torch.tensor([2.0, -1.0, 0.0]))
    y1, _ = laf(h)
    assert (y0 - y1).abs().max() > 1e-3  # the weights change the output (not computed-and-unused)


def test_laf_is_causal_and_chunk_streams() -> None:
    torch.manual_seed(0)
    laf = LayerAdaptedFusion(_acfg(laf_kernel=4), D).double().eval()
    h = _hidden(2, 13)
    full, _ = laf(h)
    # causality: changing frames >= 7 leaves outputs < 7 unchanged
    h2 = [x.clone() for x in h]
    for x in h2:
        x[:, 7:] += 5.0
    pert, _ = laf(h2)
    assert torch.equal(full[:, :7], pert[:, :7])
    assert (full[:, 7:] - pert[:, 7:]).abs().max() > 1e-3
    # chunk by chunk with the cache == whole
    cache, outs = None, []
    for s in range(0, 13, 5):
        y, cache = laf([x[:, s : s + 5] for x in h], cache)
        outs.append(y)
    assert (torch.cat(outs, 1) - full).abs().max() < 1e-12
    assert cache.shape == (2, 3, 3, D)


def test_fusion_streams_with_chunk_mask() -> None:
    torch.manual_seed(0)
    for direction in ("acoustic_query", "accent_query"):
        fus = AccentFusion(_acfg(fusion_direction=direction, fusion_ffn_units=8), D).double().eval()
        t, chunk, left = 11, 3, 1
        x = torch.randn(1, t, D, dtype=torch.float64)
        e = torch.randn(1, t, E, dtype=torch.float64)
        full, _ = fus(x, e, chunk_mask(t, chunk, left).unsqueeze(0))
        cache, outs = None, []
        for s in range(0, t, chunk):
            xc, ec = x[:, s : s + chunk], e[:, s : s + chunk]
            tc = 0 if cache is None else cache.size(1)
            y, kv = fus(xc, ec, torch.ones(1, xc.size(1), tc + xc.size(1), dtype=torch.bool), cache)
            cache = kv[:, max(kv.size(1) - chunk * left, 0) :]
            outs.append(y)
        assert (torch.cat(outs, 1) - full).abs().max() < 1e-12, direction


def test_fusion_deterministic_in_eval() -> None:
    fus = AccentFusion(_acfg(dropout_rate=0.3), D).eval()
    x, e = torch.randn(2, 6, D), torch.randn(2, 6, E)
    m = chunk_mask(6, 2).expand(2, 6, 6)
    assert torch.equal(fus(x, e, m)[0], fus(x, e, m)[0])


def test_aid_loss_ignores_padding_and_unlabelled() -> None:
    logits = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    accents = torch.tensor([2, -1, 0])
    loss = aid_loss(logits, mask, accents)
    lp = logits.log_softmax(-1)
    expect = -(lp[0, :3, 2].sum() + lp[2, :2, 0].sum()) / 5
    assert math.isclose(float(loss), float(expect), rel_tol=1e-6)
    logits2 = logits.clone()
    logits2[0, 3:] = 100.0  # padding changes nothing
    logits2[1] = -7.0  # unlabelled utterance changes nothing
    assert math.isclose(float(aid_loss(logits2, mask, accents)), float(expect), rel_tol=1e-6)
    assert aid_loss(logits, mask, torch.tensor([-1, -1, -1])) is None
    post = utterance_posterior(logits2.softmax(-1), mask)
    assert torch.allclose(post[0], logits.softmax(-1)[0, :3].mean(0))
    acc = aid_accuracy(post, accents)
    want = (post[[0, 2]].argmax(-1) == torch.tensor([2, 0])).float().mean()
    assert float(acc) == float(want)


def test_sos_eos_and_reverse() -> None:
    toks = torch.tensor([[5, 6, 7], [8, -1, -1]])
    lens = torch.tensor([3, 1])
    ys_in, ys_out = add_sos_eos(toks, lens, 9)
    assert ys_in.tolist() == [[9, 5, 6, 7], [9, 8, 9, 9]]
    assert ys_out.tolist() == [[5, 6, 7, 9], [8, 9, -1, -1]]
    assert reverse_tokens(toks, lens).tolist() == [[7, 6, 5], [8, -1, -1]]


def test_label_smoothing_matches_ce_without_smoothing() -> None:
    logits = torch.randn(2, 4, 7)
    tgt = torch.tensor([[1, 2, 3, -1], [4, -1, -1, -1]])
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-1, reduction="sum") / 2
    assert math.isclose(float(label_smoothing_loss(logits, tgt, 0.0)), float(ce), rel_tol=1e-5)
    assert float(label_smoothing_loss(logits, tgt, 0.1)) > 0


@pytest.mark.parametrize("nblocks", [1, 2])
def test_decoder_step_equals_full_forward(nblocks: int) -> None:
    torch.manual_seed(0)
    dec = TransformerDecoder(11, D, DecoderConfig(attention_heads=2, linear_units=32), num_blocks=nblocks)
    dec = dec.double().eval()
    mem = torch.randn(2, 7, D, dtype=torch.float64)
    mmask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3]).unsqueeze(1)
    ys = torch.tensor([[10, 3, 4, 5], [10, 6, 2, 1]])
    full = dec(mem, mmask, ys, torch.tensor([4, 4])).log_softmax(-1)
    cache = None
    for i in range(1, 5):
        lp, cache = dec.forward_one_step(mem, mmask, ys[:, :i], cache)
        assert (lp - full[:, i - 1]).abs().max() < 1e-10
