"""Tests of the composed model (conf/tiny.yaml): streaming parity, causality, padding, gradients."""

from __future__ import annotations

import copy
from pathlib import Path

import editdistance
import pytest
import torch

from qifusion.config import ConfigError, ModelConfig, load_config
from qifusion.models.model import QifusionModel, StreamState

ROOT = Path(__file__).resolve().parents[1]
V, A = 12, 3


def tiny_cfg(**accent: object) -> ModelConfig:
    cfg = copy.deepcopy(load_config(ROOT / "conf" / "tiny.yaml").model)
    for k, v in accent.items():
        setattr(cfg.accent, k, v)
    return cfg


def baseline_cfg() -> ModelConfig:
    return tiny_cfg(use_laf=False, use_aid=False, use_fusion=False)


def make(cfg: ModelConfig, dtype: torch.dtype = torch.float64, seed: int = 0) -> QifusionModel:
    torch.manual_seed(seed)
    m = QifusionModel(cfg, vocab_size=V, num_accents=A).to(dtype).eval()
    m.encoder.set_cmvn(torch.randn(80, dtype=dtype) * 0.1, torch.ones(80, dtype=dtype))
    return m


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def stream(
    model: QifusionModel, feats: torch.Tensor, chunk: int, left: int, state: StreamState | None = None
):
    """Feed (B,T,F) chunk by chunk as a recogniser would; returns concatenated outputs and the state."""
    enc = model.encoder
    rate, ctx = enc.subsampling_rate, enc.right_context
    window, stride = (chunk - 1) * rate + ctx + 1, chunk * rate
    state = state or model.init_state(feats.size(0))
    outs = []
    for cur in range(0, feats.size(1) - ctx, stride):
        res, state = model.forward_chunk(
            feats[:, cur : cur + window], state, chunk_size=chunk, left_chunks=left
        )
        outs.append(res)
    cat = {k: torch.cat([getattr(r, k) for r in outs], 1) for k in ("ctc_log_probs", "memory", "accent_post")}
    return cat, outs[-1].accent_utt, state


@pytest.mark.parametrize("chunk", [1, 4, 16])
@pytest.mark.parametrize("left", [-1, 2])
def test_streaming_parity_f64(chunk: int, left: int) -> None:
    model = make(tiny_cfg())
    feats = torch.randn(1, 151, 80, dtype=torch.float64)
    ref = model.encode(feats, torch.tensor([151]), chunk_size=chunk, left_chunks=left)
    got, utt, _ = stream(model, feats, chunk, left)
    assert got["ctc_log_probs"].shape == ref.ctc_log_probs.shape == (1, 37, V)
    assert rel_err(got["ctc_log_probs"], ref.ctc_log_probs) <= 1e-9
    assert rel_err(got["memory"], ref.memory) <= 1e-9
    assert rel_err(got["accent_post"], ref.accent_post) <= 1e-9
    assert rel_err(utt, ref.accent_utt) <= 1e-9


@pytest.mark.parametrize(
    "variant",
    [
        {"fuse_into_ctc": True, "fusion_direction": "accent_query", "fusion_ffn_units": 32},
        {"use_laf": False},  # fusion from the last block only
    ],
)
def test_streaming_parity_f32_variants(variant: dict) -> None:
    model = make(tiny_cfg(**variant), dtype=torch.float32)
    feats = torch.randn(1, 123, 80)
    ref = model.encode(feats, torch.tensor([123]), chunk_size=4, left_chunks=2)
    got, utt, _ = stream(model, feats, 4, 2)
    assert rel_err(got["ctc_log_probs"], ref.ctc_log_probs) <= 1e-4
    assert rel_err(got["memory"], ref.memory) <= 1e-4
    assert rel_err(got["accent_post"], ref.accent_post) <= 1e-4
    assert rel_err(utt, ref.accent_utt) <= 1e-4


def test_fuse_into_ctc_changes_ctc_input() -> None:
    plain, fused = make(tiny_cfg()), make(tiny_cfg(fuse_into_ctc=True))
    feats = torch.randn(1, 60, 80, dtype=torch.float64)
    a = plain.encode(feats, torch.tensor([60]))
    b = fused.encode(feats, torch.tensor([60]))
    assert torch.allclose(a.memory, b.memory)
    assert (a.ctc_log_probs - b.ctc_log_probs).abs().max() > 1e-6


@pytest.mark.parametrize("chunk", [1, 4])
def test_causality(chunk: int) -> None:
    model = make(tiny_cfg())
    enc = model.encoder
    feats = torch.randn(1, 160, 80, dtype=torch.float64)
    ref = model.encode(feats, torch.tensor([160]), chunk_size=chunk)
    for k in (0, 3):
        last_out = (k + 1) * chunk - 1  # last output frame of chunk k
        first_free = enc.subsampling_rate * last_out + enc.right_context + 1  # first unseen input frame
        pert = feats.clone()
        pert[:, first_free:] += torch.randn_like(pert[:, first_free:]) * 3
        out = model.encode(pert, torch.tensor([160]), chunk_size=chunk)
        n = last_out + 1
        for name in ("ctc_log_probs", "memory", "accent_post"):
            a, b = getattr(ref, name), getattr(out, name)
            assert torch.equal(a[:, :n], b[:, :n]), (name, k)
            assert (a[:, n:] - b[:, n:]).abs().max() > 1e-6, (name, k)


@pytest.mark.parametrize("chunk", [-1, 4])
def test_padding_invariance(chunk: int) -> None:
    model = make(tiny_cfg(), dtype=torch.float32)
    feats = torch.randn(3, 140, 80)
    lens = torch.tensor([90, 140, 117])
    batch = model.encode(feats, lens, chunk_size=chunk)
    for i in range(3):
        n = int(lens[i])
        alone = model.encode(feats[i : i + 1, :n], lens[i : i + 1], chunk_size=chunk)
        t = int(alone.lens[0])
        assert int(batch.lens[i]) == t
        for name in ("ctc_log_probs", "memory", "accent_post"):
            assert rel_err(getattr(batch, name)[i, :t], getattr(alone, name)[0]) <= 1e-5, name
        assert rel_err(batch.accent_utt[i], alone.accent_utt[0]) <= 1e-5


def _batch(b: int = 3, t: int = 96):
    feats = torch.randn(b, t, 80)
    lens = torch.tensor([t, t - 20, t - 35][:b])
    tokens = torch.randint(2, V - 1, (b, 6))
    token_lens = torch.tensor([6, 4, 3][:b])
    tokens[torch.arange(6).unsqueeze(0) >= token_lens.unsqueeze(1)] = -1
    return feats, lens, tokens, token_lens, torch.tensor([0, 2, 1][:b])


@pytest.mark.parametrize("kind", ["qifusion", "baseline", "oracle", "bidecoder"])
@pytest.mark.parametrize("static_chunk", [0, 4])
def test_gradients_reach_every_parameter(kind: str, static_chunk: int) -> None:
    cfg = {
        "qifusion": tiny_cfg(fusion_ffn_units=16, aid_hidden=16),
        "baseline": baseline_cfg(),
        "oracle": tiny_cfg(use_laf=False, use_aid=False, use_fusion=False, oracle_accent=True),
        "bidecoder": tiny_cfg(),
    }[kind]
    if kind == "bidecoder":
        cfg.reverse_weight, cfg.decoder.r_num_blocks = 0.3, 1
    cfg.encoder.use_dynamic_chunk = False
    cfg.encoder.static_chunk_size = static_chunk
    model = make(cfg, dtype=torch.float32).train()
    out = model(*_batch())
    assert set(out) >= {"loss", "loss_ctc", "loss_att"}
    out["loss"].backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    has_r = any(n.startswith("r_decoder.") for n, _ in model.named_parameters())
    assert has_r == (kind == "bidecoder")


def test_loss_combination_and_aid_outputs() -> None:
    cfg = tiny_cfg()
    cfg.encoder.use_dynamic_chunk = False
    model = make(cfg, dtype=torch.float32)
    out = model(*_batch())
    w = cfg.ctc_weight
    expect = w * out["loss_ctc"] + (1 - w) * out["loss_att"] + cfg.aid_weight * out["loss_aid"]
    assert torch.allclose(out["loss"], expect)
    assert 0.0 <= float(out["aid_acc"]) <= 1.0
    feats, lens, tokens, token_lens, _ = _batch()
    unl = model(feats, lens, tokens, token_lens, torch.tensor([-1, -1, -1]))
    assert float(unl["loss_aid"].detach()) == 0.0 and "aid_acc" not in unl
    base = make(baseline_cfg(), dtype=torch.float32)(*_batch())
    assert "loss_aid" not in base and "aid_acc" not in base


def test_baseline_shares_all_common_modules() -> None:
    q = dict(make(tiny_cfg()).named_parameters())
    b = dict(make(baseline_cfg()).named_parameters())
    assert set(b) <= set(q)
    assert all(q[n].shape == p.shape for n, p in b.items())
    extra = {n.split(".")[0] for n in set(q) - set(b)}
    assert extra == {"laf", "aid", "fusion"}
    assert make(baseline_cfg()).laf_weights() is None
    w = make(tiny_cfg()).laf_weights()
    assert w.shape == (3,) and abs(float(w.sum()) - 1) < 1e-9


@pytest.mark.parametrize("left", [-1, 2])
def test_stacked_streams_equal_single_streams(left: int) -> None:
    model = make(tiny_cfg())
    chunk = 4
    xa = torch.randn(1, 139, 80, dtype=torch.float64)
    xb = torch.randn(1, 139, 80, dtype=torch.float64)
    ref_a, _, _ = stream(model, xa, chunk, left)
    ref_b, utt_b, _ = stream(model, xb, chunk, left)
    # stream A runs 5 chunks alone, then B joins: batch the rest (B lags 5 chunks behind A)
    stride = chunk * model.encoder.subsampling_rate
    head, _, sa = stream(model, xa[:, : 5 * stride + 6], chunk, left)
    both = StreamState.stack([sa, model.init_state(1)])
    tail_a = xa[:, 5 * stride :]
    n = min(tail_a.size(1), xb.size(1)) - 6
    n -= n % stride
    x = torch.cat([tail_a[:, : n + 6], xb[:, : n + 6]], 0)
    mid, _, st = stream(model, x, chunk, left, state=both)
    sa2, sb2 = st.unstack()
    assert sa2.cache_mask.all() and sb2.cache_mask.all()
    k = mid["ctc_log_probs"].size(1)
    assert (
        rel_err(
            torch.cat([head["ctc_log_probs"], mid["ctc_log_probs"][:1]], 1),
            ref_a["ctc_log_probs"][:, : 5 * chunk + k],
        )
        <= 1e-9
    )
    assert rel_err(mid["memory"][1:], ref_b["memory"][:, :k]) <= 1e-9
    assert rel_err(mid["accent_post"][1:], ref_b["accent_post"][:, :k]) <= 1e-9
    # B continues alone from its unstacked state and ends exactly like the single stream
    rest, utt, _ = stream(model, xb[:, n:], chunk, left, state=sb2)
    assert rel_err(torch.cat([mid["memory"][1:], rest["memory"]], 1), ref_b["memory"]) <= 1e-9
    assert rel_err(utt, utt_b) <= 1e-9


def test_attention_scores_match_decoder_steps() -> None:
    model = make(tiny_cfg())
    feats = torch.randn(2, 80, 80, dtype=torch.float64)
    enc = model.encode(feats, torch.tensor([80, 60]))
    hyps = [[[3, 4, 5], [3]], [[6, 7]]]
    scores = model.attention_scores(enc.memory, enc.lens, hyps)
    assert [s.shape for s in scores] == [(2,), (1,)]
    # every hypothesis (utterances with different n-best sizes share one padded decoder batch)
    for b, i in [(0, 0), (0, 1), (1, 0)]:
        mmask = (torch.arange(enc.memory.size(1)) < enc.lens[b]).view(1, 1, -1)
        ys, cache, total = torch.tensor([[V - 1]]), None, 0.0
        for tok in [*hyps[b][i], V - 1]:
            lp, cache = model.decoder_step(enc.memory[b : b + 1], mmask, ys, cache)
            total += float(lp[0, tok].detach())
            ys = torch.cat([ys, torch.tensor([[tok]])], 1)
        assert abs(float(scores[b][i]) - total) < 1e-9, (b, i)


def test_tiny_model_overfits() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(dropout_rate=0.0)
    cfg.encoder.dropout_rate = cfg.encoder.positional_dropout_rate = cfg.decoder.dropout_rate = 0.0
    cfg.encoder.use_dynamic_chunk = False
    model = QifusionModel(cfg, vocab_size=V, num_accents=A)
    feats = torch.randn(4, 48, 80)
    lens = torch.tensor([48, 44, 40, 46])
    tokens = torch.randint(2, V - 1, (4, 5))
    token_lens = torch.tensor([5, 4, 5, 3])
    tokens[torch.arange(5).unsqueeze(0) >= token_lens.unsqueeze(1)] = -1
    accents = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.Adam(model.parameters(), lr=4e-3)
    for _ in range(160):
        opt.zero_grad()
        model(feats, lens, tokens, token_lens, accents)["loss"].backward()
        opt.step()
    model.eval()
    enc = model.encode(feats, lens)
    errs = total = 0
    for i in range(4):
        best = enc.ctc_log_probs[i, : int(enc.lens[i])].argmax(-1).tolist()
        hyp = [t for j, t in enumerate(best) if t != 0 and (j == 0 or t != best[j - 1])]
        ref = tokens[i, : int(token_lens[i])].tolist()
        errs += editdistance.eval(hyp, ref)
        total += len(ref)
    assert errs / total <= 0.05
    assert (enc.accent_utt.argmax(-1) == accents).all()


def test_laf_layers_beyond_num_blocks_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  encoder: {num_blocks: 4}\n  accent: {laf_layers: [3, 4, 5]}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*model\.accent\.laf_layers.*\[5\].*1\.\.4"):
        load_config(bad)
    cfg = tiny_cfg()
    cfg.encoder.num_blocks = 2  # mutated after loading: the model checks again
    with pytest.raises(ConfigError, match="laf_layers"):
        QifusionModel(cfg, vocab_size=V, num_accents=A)


def test_shipped_configs_load_and_small_sizes() -> None:
    names = ["tiny", "baseline_small", "qifusion_small", "baseline_small_matched", "baseline", "qifusion"]
    cfgs = {n: load_config(ROOT / "conf" / f"{n}.yaml").model for n in names}
    assert not any([cfgs["baseline"].accent.use_laf, cfgs["baseline_small"].accent.use_fusion])
    assert cfgs["qifusion"].encoder.output_size == 256 and cfgs["qifusion"].decoder.num_blocks == 6
    counts = {
        n: sum(p.numel() for p in QifusionModel(cfgs[n], vocab_size=31, num_accents=8).parameters())
        for n in ("baseline_small", "qifusion_small", "baseline_small_matched")
    }
    assert counts["qifusion_small"] <= 7.2e6
    assert counts["baseline_small"] < counts["qifusion_small"]
    assert abs(counts["baseline_small_matched"] / counts["qifusion_small"] - 1) < 0.002
    # the small configs share one recipe: a change to it is made in all three (docs/train.md "Recipe")
    small = [load_config(ROOT / "conf" / f"{n}.yaml") for n in ("baseline_small", "qifusion_small",
                                                               "baseline_small_matched")]
    assert all(c.train == small[0].train and c.data == small[0].data for c in small)
