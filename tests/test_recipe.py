"""The training recipe's parts (issue 17): input floor, embedding scale, logit-adjusted AID loss, dev
curves by time, a training-time budget, and train-time dev CER equal to ``qifusion decode``'s."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from qifusion.config import AccentConfig, ConfigError, EncoderConfig, TrainConfig
from qifusion.data.cmvn import dither_floor, load_floor, save_cmvn
from qifusion.data.features import compute_fbank
from qifusion.models.aid import AccentClassifier, aid_loss
from qifusion.models.conformer import ConformerEncoder
from qifusion.models.frontend import Conv2dSubsampling, GlobalCMVN
from qifusion.train.ddp import DistInfo
from qifusion.train.logs import MetricsLog
from qifusion.train.loop import Trainer
from qifusion.train.scheduler import WarmupLR, build_scheduler
from tests.test_train import _batches, _ListLoader, _StandIn


# ----------------------------------------------------------------------------- input floor
def test_dither_floor_lifts_digital_silence_into_the_dithered_range() -> None:
    assert dither_floor(0.0) is None
    floor = dither_floor(1.0)
    assert floor is not None and floor.shape == (80,)
    silence = np.zeros(16000, dtype=np.float32)
    digital = compute_fbank(silence)  # exact zeros, no dither: every bin at the log floor
    dithered = compute_fbank(silence, dither=1.0, rng=np.random.default_rng(5))
    assert float(digital.max()) < -15.0
    cmvn = GlobalCMVN(80)
    cmvn.set_stats(torch.zeros(80), torch.ones(80), floor)
    lifted = cmvn(digital.unsqueeze(0))[0]
    # digital silence now sits just under the dithered silence training saw (within 2.5 std per bin)
    mu, sd = dithered.mean(0), dithered.std(0)
    assert bool(((lifted - mu) / sd).abs().max() < 2.5)
    assert bool((lifted < mu).all())
    # speech-level input passes unchanged
    speech = torch.full((1, 3, 80), 20.0)
    assert torch.equal(cmvn(speech), speech)


def test_models_saved_before_the_floor_load_without_one(tmp_path: Path) -> None:
    enc = ConformerEncoder(EncoderConfig(output_size=32, attention_heads=2, linear_units=64, num_blocks=1))
    state = {k: v for k, v in enc.state_dict().items() if k != "cmvn.floor"}  # an old checkpoint
    enc.cmvn.set_stats(torch.zeros(80), torch.ones(80), torch.zeros(80))
    enc.load_state_dict(state)
    assert bool(torch.isinf(enc.cmvn.floor).all())
    x = torch.full((1, 20, 80), -15.9)
    assert torch.equal(enc.cmvn(x), x)  # no floor: unchanged behaviour
    save_cmvn(tmp_path, torch.zeros(80), torch.ones(80), floor=torch.arange(80.0))
    assert torch.equal(load_floor(tmp_path), torch.arange(80.0))
    save_cmvn(tmp_path, torch.zeros(80), torch.ones(80))
    assert load_floor(tmp_path) is None


def test_embedding_scale_multiplies_the_front_end_by_sqrt_d() -> None:
    torch.manual_seed(0)
    plain, scaled = Conv2dSubsampling(80, 64), Conv2dSubsampling(80, 64, scale=True)
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 40, 80)
    a, _ = plain(x)
    b, _ = scaled(x)
    assert torch.allclose(b, a * 8.0, atol=1e-5)
    assert ConformerEncoder(EncoderConfig(output_size=32, attention_heads=2, num_blocks=1,
                                          embed_scale=True)).embed.xscale == pytest.approx(math.sqrt(32))
    # the default stays off, so a model dir written before the key existed loads as it was trained
    default = ConformerEncoder(EncoderConfig(output_size=32, attention_heads=2, num_blocks=1))
    assert default.embed.xscale == 1.0


# ----------------------------------------------------------------------------- balanced AID loss
def test_logit_adjusted_aid_loss_adds_the_log_prior() -> None:
    head = AccentClassifier(AccentConfig(embed_dim=4, aid_balanced=True), 3)
    head.set_prior(torch.tensor([80.0, 15.0, 5.0]))
    logits = torch.randn(2, 6, 3)
    mask = torch.ones(2, 6, dtype=torch.bool)
    accents = torch.tensor([0, 2])
    prior = torch.tensor([0.8, 0.15, 0.05]).log()
    want = float(aid_loss(logits + prior, mask, accents))
    assert float(head.loss(logits, mask, accents)) == pytest.approx(want, rel=1e-6)
    # uninformative (equal) logits: the adjusted loss is the prior's cross-entropy, so the head need not
    # learn the prior and equal logits are its balanced optimum
    flat = torch.zeros(1, 4, 3)
    for a, p in ((0, 0.8), (2, 0.05)):
        got = float(head.loss(flat, torch.ones(1, 4, dtype=torch.bool), torch.tensor([a])))
        assert got == pytest.approx(-math.log(p), rel=1e-5)
    plain = AccentClassifier(AccentConfig(embed_dim=4, aid_balanced=False), 3)
    plain.set_prior(torch.tensor([80.0, 15.0, 5.0]))
    assert float(plain.loss(logits, mask, accents)) == pytest.approx(float(aid_loss(logits, mask, accents)))
    assert "log_prior" not in head.state_dict()  # training-only: never saved, never used at inference


# ----------------------------------------------------------------------------- dev curves and time budget
def _trainer(tmp_path: Path, evals: list[int], **cfg: float) -> Trainer:
    torch.manual_seed(0)
    model = _StandIn()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        evals.append(1)
        return {"dev_cer": 50.0 - len(evals)}

    return Trainer(model=model, optimizer=opt, scheduler=WarmupLR(opt, warmup_steps=2),
                   train_loader=_ListLoader(_batches(6)), cfg=TrainConfig(log_interval=1, **cfg),  # type: ignore[arg-type]
                   dist_info=DistInfo(), exp_dir=tmp_path, evaluate=evaluate, progress=False,
                   metrics=MetricsLog(tmp_path, enabled=True, tensorboard=False))


def test_dev_every_steps_logs_a_curve_against_training_minutes(tmp_path: Path) -> None:
    evals: list[int] = []
    state = _trainer(tmp_path, evals, max_epochs=1, dev_every_steps=2).fit()
    recs = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    dev = [r for r in recs if r["kind"] == "dev"]
    assert [r["step"] for r in dev] == [2, 4, 6]
    assert [r["dev_cer"] for r in dev] == [49.0, 48.0, 47.0]
    minutes = [r["train_minutes"] for r in dev]
    assert minutes == sorted(minutes) and minutes[0] > 0
    assert len(evals) == 4  # three step evaluations + the end-of-epoch one
    epoch = next(r for r in recs if r["kind"] == "epoch")
    assert epoch["train_minutes"] == pytest.approx(state.train_seconds / 60)


def test_max_minutes_stops_training_at_the_budget(tmp_path: Path) -> None:
    state = _trainer(tmp_path, [], max_epochs=5, max_minutes=1e-9).fit()
    assert state.step == 1  # the first optimizer step spends the budget
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["step_1.pt"]
    assert state.dev and state.dev[-1]["dev_cer"] == 49.0
    recs = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    last = [r for r in recs if r["kind"] == "dev"][-1]  # the end-of-budget dev point, placed on the curve
    assert (last["step"], last["epoch"], last["dev_cer"]) == (1, 1, 49.0) and last["train_minutes"] > 0


def _lrs(sched: Any, n: int) -> list[float]:
    """The lr after 0..n optimizer steps."""
    out = [sched.get_last_lr()[0]]
    for _ in range(n):
        sched.optimizer.step()
        sched.step()
        out.append(sched.get_last_lr()[0])
    return out


def test_step_budget_cooldown_takes_the_lr_to_zero_at_the_last_step() -> None:
    def sgd() -> torch.optim.Optimizer:
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)

    sched = build_scheduler(sgd(), name="warmuplr", warmup_steps=10, total_steps=100, cooldown=0.2)
    plain = _lrs(WarmupLR(sgd(), warmup_steps=10), 100)
    got = _lrs(sched, 100)
    assert got[:81] == pytest.approx(plain[:81])  # untouched until the last 20 steps
    assert got[90] == pytest.approx(plain[90] * (1 - math.sqrt(0.5)))  # the 1-sqrt ramp
    assert got[100] == 0.0 and all(a > b for a, b in itertools.pairwise(got[80:]))
    assert sched.cooldown_done(100) and not sched.cooldown_done(99)
    # the ramp is scheduler state: a resumed run carries on with it
    resumed = build_scheduler(sgd(), name="warmuplr", warmup_steps=10, total_steps=100, cooldown=0.2,
                              time_budget=True)
    assert not resumed.cooling()  # a time budget leaves the start to the trainer
    resumed.load_state_dict(sched.state_dict())
    assert resumed.cooling() and resumed.get_last_lr() == sched.get_last_lr()
    with pytest.raises(ConfigError, match=r"train\.cooldown"):
        TrainConfig(cooldown=1.0)


def test_time_budget_cooldown_starts_at_its_share_of_the_minutes(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The cool-down starts when ``cooldown`` of ``max_minutes`` is left, spans the steps the speed so far
    fits in, and ends the run when the lr reaches 0, even if minutes remain (the steps got faster)."""
    import qifusion.train.loop as loop

    clock = [0.0]
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    tr = _trainer(tmp_path, [], max_epochs=5, max_minutes=1.0, cooldown=0.5)
    seconds = iter([6.0] * 5 + [3.0] * 30)  # steps 1-5 take 6 s each, later steps 3 s
    forward = tr.raw_model.forward

    def timed(*args: Any) -> dict[str, torch.Tensor]:
        clock[0] += next(seconds)
        return forward(*args)

    tr.raw_model.forward = timed  # type: ignore[method-assign]
    state = tr.fit()
    # 30 of 60 s spent after step 5: 10 steps per minute so far, so 5 steps of cool-down
    assert (tr.scheduler.cooldown_start, tr.scheduler.cooldown_steps) == (5, 5)
    assert state.step == 10 and state.train_seconds == 45.0  # stopped by the ramp, 15 s before the budget
    recs = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in recs if r["kind"] == "train"]
    warm = [0.1 * math.sqrt(2) * min((k + 1) ** -0.5, (k + 1) * 2**-1.5) for k in range(1, 11)]
    ramp = [1.0] * 5 + [1 - math.sqrt(k / 5) for k in range(1, 6)]
    assert lrs == pytest.approx([w * r for w, r in zip(warm, ramp)])
    assert lrs[-1] == 0.0 and state.epoch == 2 and not state.epoch_done  # stopped inside epoch 2 ...
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch_1.pt", "step_10.pt"]  # ... and saved


# ----------------------------------------------------------------------------- one CER for train and decode
def test_training_dev_cer_is_decodes_ctc_greedy_cer(tiny_model_dir: Path, synth_corpus: Path,
                                                    tmp_path: Path) -> None:
    """The CER ``qifusion train`` logs for dev is the one ``qifusion decode --mode ctc_greedy`` reports."""
    from qifusion.decode.run import decode_dir

    card = json.loads((tiny_model_dir / "card.json").read_text())
    report = decode_dir(model_dir=tiny_model_dir, data_dir=synth_corpus / "dev", out_dir=tmp_path / "d",
                        mode="ctc_greedy", progress=False)
    assert report["cer"] == pytest.approx(card["dev"]["dev_cer"], abs=1e-3)


def test_logit_pooling_is_the_softmax_of_mean_logits_and_streams() -> None:
    from qifusion.models.aid import frame_evidence, pooled_posterior, utterance_posterior

    logits = torch.randn(2, 7, 5, dtype=torch.float64)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3], dtype=torch.bool)
    post = logits.softmax(-1)
    got = utterance_posterior(post, mask, "logit")
    want = torch.stack([logits[0].mean(0).softmax(-1), logits[1, :4].mean(0).softmax(-1)])
    assert torch.allclose(got, want, atol=1e-12)
    # running sums over chunks give the offline decision (what the stream state keeps)
    ev = frame_evidence(post[1:, :4], "logit")
    running = ev[:, :2].sum(1) + ev[:, 2:].sum(1)
    assert torch.allclose(pooled_posterior(running, torch.tensor([4]), "logit"), want[1:], atol=1e-12)
    # the paper's pooling is unchanged: the mean of the frame posteriors
    assert torch.allclose(utterance_posterior(post, mask)[1], post[1, :4].mean(0))


def test_logit_pooling_adds_an_utterance_loss_on_mean_logits() -> None:
    head = AccentClassifier(AccentConfig(embed_dim=4, aid_balanced=False, aid_pooling="logit"), 3)
    logits = torch.randn(2, 6, 3)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3], dtype=torch.bool)
    accents = torch.tensor([1, -1])  # the unlabelled utterance counts in neither part
    frame = aid_loss(logits, mask, accents)
    utt = torch.nn.functional.cross_entropy(logits[0].mean(0, keepdim=True), torch.tensor([1]))
    assert float(head.loss(logits, mask, accents)) == pytest.approx(float(frame + utt), rel=1e-6)
