"""Training engine: schedulers, config errors, non-finite losses, DDP on CPU, bitwise SIGKILL resume."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from qifusion import malloc
from qifusion.cli import main
from qifusion.config import TrainConfig
from qifusion.errors import UserError
from qifusion.train.ddp import DistInfo
from qifusion.train.logs import MetricsLog, resident_mb
from qifusion.train.loop import Trainer
from qifusion.train.scheduler import WarmupCosineLR, WarmupLR

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "conf" / "tiny.yaml"
# augmentation on (speed perturb, dither, SpecAugment; tiny.yaml has dynamic chunks) for resume tests
AUG = ["data.speed_perturb=[0.9,1.0,1.1]", "data.dither=1.0", "data.spec_aug.enabled=true"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    return env


def _train_cmd(data: Path, exp: Path, sets: list[str], *, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "qifusion", "train", "--config", str(TINY), "--data", str(data),
           "--exp", str(exp)]
    for s in sets:
        cmd += ["--set", s]
    return [*cmd, "--resume"] if resume else cmd


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"tensors differ: {diff[:5]}"


# ----------------------------------------------------------------------------- schedulers
def test_warmuplr_peaks_at_warmup_then_inverse_sqrt() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = WarmupLR(opt, warmup_steps=100)
    lrs = []
    for _ in range(400):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3 / 100)  # step 1 of 100
    assert max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) == 99
    assert lrs[399] == pytest.approx(1e-3 * math.sqrt(100 / 400))


def test_cosine_warms_up_and_decays_to_min() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupCosineLR(opt, warmup_steps=10, total_steps=110, min_lr_ratio=0.01)
    lrs = []
    for _ in range(120):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[9] == pytest.approx(1.0)
    assert lrs[59] == pytest.approx(0.01 + 0.99 * 0.5, abs=1e-9)  # half way: cosine at pi/2
    assert lrs[109] == pytest.approx(0.01) and lrs[119] == pytest.approx(0.01)


# ----------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    ("override", "needle"),
    [("model.foo=1", "model.foo"), ("train.optimizer=sgd", "train.optimizer"),
     ("train.max_epochs=0", "train.max_epochs")],
)
def test_bad_config_key_fails_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str,
                                        needle: str) -> None:
    rc = main(["train", "--config", str(TINY), "--data", str(tmp_path / "nodata"), "--exp",
               str(tmp_path / "exp"), "--set", override])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "exp").exists()


# ----------------------------------------------------------------------------- loop with a stand-in
class _StandIn(torch.nn.Module):
    """Linear stand-in: loss = mean squared output; ``nan_at`` call indices return NaN."""

    def __init__(self, nan_at: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.calls = 0
        self.nan_at = set(nan_at)

    def forward(self, feats, feats_lens, tokens, token_lens, accents):
        self.calls += 1
        loss = (self.lin(feats) ** 2).mean()
        if self.calls in self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss}


class _ListLoader:
    def __init__(self, batches: list[SimpleNamespace]) -> None:
        self.batches, self.pos, self.epoch = batches, 0, 0

    def set_epoch(self, e: int) -> None:
        if e != self.epoch:
            self.epoch, self.pos = e, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for i in range(self.pos, len(self.batches)):
            self.pos = i + 1
            yield self.batches[i]
        self.pos = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: dict[str, int]) -> None:
        self.epoch, self.pos = s["epoch"], s["pos"]


def _batches(n: int) -> list[SimpleNamespace]:
    g = torch.Generator().manual_seed(0)
    return [SimpleNamespace(feats=torch.randn(2, 5, 4, generator=g), feats_lens=torch.tensor([5, 5]),
                            tokens=torch.zeros(2, 1, dtype=torch.long),
                            token_lens=torch.ones(2, dtype=torch.long),
                            accents=torch.zeros(2, dtype=torch.long), durations=torch.tensor([1.0, 1.0]))
            for _ in range(n)]


def _trainer(model: torch.nn.Module, tmp_path: Path, **cfg: int) -> Trainer:
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    return Trainer(model=model, optimizer=opt, scheduler=WarmupLR(opt, warmup_steps=2),
                   train_loader=_ListLoader(_batches(4)), cfg=TrainConfig(log_interval=1, **cfg),
                   dist_info=DistInfo(), exp_dir=tmp_path, progress=False)


def test_nonfinite_loss_is_skipped_and_counted(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _StandIn(nan_at=(3,))
    tr = _trainer(model, tmp_path / "a", max_epochs=1)
    state = tr.fit()
    assert state.skipped_nonfinite_loss == 1 and state.step == 3
    # the same run without the third batch: a skipped step must leave no trace (weights, Adam moments)
    torch.manual_seed(0)
    ref_model = _StandIn()
    ref = _trainer(ref_model, tmp_path / "b", max_epochs=1)
    ref.loader.batches = [b for i, b in enumerate(ref.loader.batches) if i != 2]
    assert ref.fit().skipped_nonfinite_loss == 0
    _assert_bitwise_equal(ref_model.state_dict(), model.state_dict())
    assert torch.equal(ref.optimizer.state_dict()["state"][0]["exp_avg_sq"],
                       tr.optimizer.state_dict()["state"][0]["exp_avg_sq"])


def test_grad_accumulation_counts_optimizer_steps(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tr = _trainer(_StandIn(), tmp_path, max_epochs=2, accum_grad=3)
    state = tr.fit()
    assert state.step == 4  # 4 batches per epoch: one step of 3 + one flushed step of 1, twice
    assert state.epoch == 2 and state.epoch_done
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["epoch_1.pt", "epoch_2.pt"]


class _Dtypes(_StandIn):
    """Stand-in that records the dtype its linear layer computed in."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.dtype] = []

    def forward(self, feats, feats_lens, tokens, token_lens, accents):
        self.seen.append(self.lin(feats).dtype)
        return super().forward(feats, feats_lens, tokens, token_lens, accents)


AMP_CASES = [("none", True, torch.float32), ("bf16", True, torch.bfloat16), ("bf16", False, torch.float32),
             ("fp16", True, torch.float32)]


@pytest.mark.parametrize(("amp", "native", "dtype"), AMP_CASES)
def test_bf16_autocast_trains_on_cpu_and_falls_back_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, amp: str,
        native: bool, dtype: torch.dtype) -> None:
    """``train.amp: bf16`` runs the forward under a CPU bf16 autocast (weights, optimizer state and loss
    stay float32) where the CPU has native bf16 matmuls; without them, and for fp16 (CUDA only), it trains
    in float32 with a warning saying why."""
    from qifusion.train import loop

    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: native)
    torch.manual_seed(0)
    model = _Dtypes()
    before = model.lin.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="qifusion.train"):
        state = _trainer(model, tmp_path, max_epochs=1, amp=amp).fit()
    assert state.step == 4 and set(model.seen) == {dtype}
    precision = "float32" if dtype == torch.float32 else f"{amp} autocast"
    assert f"training precision: {precision}" in caplog.text  # what benchmarks.recipe records per start
    assert model.lin.weight.dtype == torch.float32 and not torch.equal(model.lin.weight, before)
    assert ("fp16 needs CUDA" in caplog.text) == (amp == "fp16")
    assert ("bf16 needs native bf16 matmuls" in caplog.text) == (amp == "bf16" and not native)


def test_log_probs_are_float32_under_a_bf16_autocast() -> None:
    """The CTC head, the attention loss and the decoder's sequence scores take their log-softmax in float32
    (CPU autocast keeps log_softmax in bf16: log-probs with 3 significant digits)."""
    from qifusion.models.ctc import CTCHead
    from qifusion.models.decoder import label_smoothing_loss

    head = CTCHead(8, 5)
    x, target = torch.randn(2, 3, 8), torch.tensor([[1, 2, -1], [4, 0, 3]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logp = head(x)
        logits = head.proj(x)
        loss = label_smoothing_loss(logits, target, 0.1)
    assert logp.dtype == torch.float32 and loss.dtype == torch.float32
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(loss, label_smoothing_loss(logits.float(), target, 0.1))


class _WithParts(_StandIn):
    """Stand-in that also returns loss parts: ``loss_aid`` = call index, ``aid_acc`` = 0.5."""

    def forward(self, feats, feats_lens, tokens, token_lens, accents):
        out = super().forward(feats, feats_lens, tokens, token_lens, accents)
        return {**out, "loss_aid": torch.tensor(float(self.calls)), "aid_acc": torch.tensor(0.5)}


def test_train_log_has_loss_parts_averaged_over_the_interval(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    model = _WithParts(nan_at=(3,))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    tr = Trainer(model=model, optimizer=opt, scheduler=WarmupLR(opt, warmup_steps=2),
                 train_loader=_ListLoader(_batches(4)), cfg=TrainConfig(log_interval=2, max_epochs=1),
                 dist_info=DistInfo(), exp_dir=tmp_path, progress=False,
                 metrics=MetricsLog(tmp_path, enabled=True, tensorboard=False))
    with caplog.at_level(logging.INFO, logger="qifusion.train"):
        tr.fit()
    recs = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    # calls 1, 2 -> steps 1, 2 (logged: mean of calls 1 and 2); call 3 is non-finite (no step, its parts not
    # counted); call 4 -> step 3 (not a multiple of the interval)
    assert [(r["step"], r["loss_aid"], r["aid_acc"]) for r in train] == [(2, 1.5, 0.5)]
    assert "loss_ctc" not in train[0] and "loss_att" not in train[0]  # parts the model lacks are absent
    assert "step 2 loss" in caplog.text and "loss_aid 1.5000 aid_acc 0.5000" in caplog.text
    # the process's resident memory (Linux): what a heap growing over hours would show
    assert 10 < train[0]["rss_mb"] < 64 * 1024 and " GiB resident" in caplog.text


def test_resident_mb_reads_statm_and_is_none_without_it(tmp_path: Path) -> None:
    statm = tmp_path / "statm"
    statm.write_text("100000 2560 300 1 0 2000 0\n")
    assert resident_mb(statm) == 2560 * os.sysconf("SC_PAGE_SIZE") / 2**20
    assert resident_mb(tmp_path / "missing") is None
    statm.write_text("garbage\n")
    assert resident_mb(statm) is None


# ----------------------------------------------------------------------------- real runs
@pytest.mark.parametrize(("workers", "cache"), [(0, False), (1, False), (1, True), (1, "prefill")])
def test_sigkill_then_resume_is_bitwise_identical(synth_corpus: Path, tmp_path: Path, workers: int,
                                                  cache: bool | str) -> None:
    """The reference trains without loader processes; the killed-and-resumed run with ``workers`` of them
    (the recipe's configs use 1): the same batches, the same weights, bit for bit. With the feature cache
    both runs use one (the resumed run finds it half filled) and training removes it at the end; with
    ``prefill`` the killed run computes every entry before training (the reference fills it lazily)."""
    sets = [*AUG, "train.max_steps=12", "train.save_interval_steps=2", "train.log_interval=2",
            "data.max_duration=20", f"data.feature_cache={str(bool(cache)).lower()}"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    subprocess.run(_train_cmd(synth_corpus, ref, [*sets, "data.num_workers=0"]), env=_env(), check=True,
                   capture_output=True)
    sets += [f"data.num_workers={workers}", f"data.feature_cache_prefill={str(cache == 'prefill').lower()}"]
    proc = subprocess.Popen(_train_cmd(synth_corpus, cut, sets), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (cut / "step_4.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (cut / "final").exists()
    # the resumed start asks for jemalloc where the system has it: the console command re-executes itself
    # under it (qifusion/malloc.py), and the weights do not depend on the allocator
    lib = malloc.find_jemalloc()
    env = dict(_env(), QIFUSION_MALLOC="jemalloc") if lib else _env()
    done = subprocess.run(_train_cmd(synth_corpus, cut, sets, resume=True), env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (cut / "train.log").read_text()
    assert "resumed from " + str(cut / "step_") in log
    # the first start trained in float32 under auto: the system's malloc (jemalloc is for bf16 autocasts)
    starts = [line.split("heap allocator: ")[1] for line in log.splitlines() if "heap allocator: " in line]
    assert starts == ["system)", f"jemalloc ({lib}))" if lib else "system)"]
    _assert_bitwise_equal(_weights(ref / "final" / "model.pt"), _weights(cut / "final" / "model.pt"))
    card = json.loads((cut / "final" / "card.json").read_text())
    assert card["steps"] == 12 and card["epochs"] >= 2
    recs = [json.loads(x) for x in (cut / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs if r["kind"] == "train"]
    assert steps == sorted(set(steps)) == list(range(2, 13, 2))  # no duplicates after the resume
    assert not (cut / "fbank_cache").exists() and not (ref / "fbank_cache").exists()
    filled = [(r["step"], r["computed"], r["entries"]) for r in recs if r["kind"] == "features"]
    if cache == "prefill":  # all entries before step 1; none again on resume (the cache outlives a kill)
        n = filled[0][2]
        assert n > 0 and filled[0][:2] == (0, n) and len(filled) == 2 and filled[1][0] >= 4
        assert filled[1][1:] == (0, n)
    else:
        assert filled == []


DDP_SCRIPT = """
import os, sys, torch
from pathlib import Path
import qifusion.train.loop as loop
import qifusion.models.model as mm
out = Path(sys.argv[1])
rank = int(os.environ["RANK"])
where = {"at": None}
micro = loop.Trainer._micro_step
def micro_step(self, batch, **k):
    where["at"] = (self.state.epoch, self.state.batch)
    return micro(self, batch, **k)
loop.Trainer._micro_step = micro_step
fwd = mm.QifusionModel.forward
def forward(self, *a, **k):
    res = fwd(self, *a, **k)
    if self.training and rank == 1 and where["at"] == (1, 2):  # the same batch in every run
        res["loss"] = res["loss"] * float("nan")
    return res
mm.QifusionModel.forward = forward
save = loop.Trainer.save
def save_and_maybe_die(self, name):
    save(self, name)
    if name == os.environ.get("CUT_AFTER"):
        os._exit(0)  # every rank passed the save's barrier: a clean interruption after a checkpoint
loop.Trainer.save = save_and_maybe_die
fit = loop.Trainer.fit
def fit_and_dump(self):
    state = fit(self)
    torch.save({"model": self.raw_model.state_dict(), "skipped": state.skipped_nonfinite_loss,
                "step": state.step, "len": len(self.loader)}, out / f"rank{rank}.pt")
    return state
loop.Trainer.fit = fit_and_dump
from qifusion.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _torchrun(script: Path, out: Path, args: list[str], *, cut_after: str = "") -> None:
    env = _env()
    env["MASTER_PORT"] = str(29500 + os.getpid() % 1000)
    env["CUT_AFTER"] = cut_after
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           env["MASTER_PORT"], str(script), str(out), *args[3:]]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-4000:]


def test_ddp_two_cpu_ranks_identical_weights_and_bitwise_resume(synth_corpus: Path, tmp_path: Path) -> None:
    script = tmp_path / "ddp_worker.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    exp = tmp_path / "exp"
    sets = ["train.max_steps=4", "data.max_duration=15", "train.log_interval=1",
            "train.save_interval_steps=2", "data.feature_cache=true"]
    _torchrun(script, tmp_path, _train_cmd(synth_corpus, exp, sets))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["len"] == r1["len"]  # the loader equalises batches over ranks
    assert r0["step"] == r1["step"] == 4
    assert r0["skipped"] == r1["skipped"] == 1  # NaN on rank 1 only: both ranks skipped it
    _assert_bitwise_equal(r0["model"], r1["model"])
    assert (exp / "final" / "model.pt").exists() and "world_size" in (exp / "final" / "card.json").read_text()
    # interrupted after step_2.pt (mid-epoch 2 of 2-batch epochs), then resumed: bitwise the same weights;
    # this run fills the shared feature cache before training, each rank half of the utterances
    cut, out = tmp_path / "cut", tmp_path / "cut_out"
    out.mkdir()
    sets.append("data.feature_cache_prefill=true")
    _torchrun(script, out, _train_cmd(synth_corpus, cut, sets), cut_after="step_2.pt")
    assert (cut / "step_2.pt").exists() and not (cut / "final").exists()
    state = torch.load(cut / "step_2.pt", weights_only=True)
    assert state["trainer"]["batch"] not in (0, r0["len"])  # cut inside an epoch
    rngs = state["rng_ranks"]
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])  # per-rank states kept
    _torchrun(script, out, _train_cmd(synth_corpus, cut, sets, resume=True))
    assert "resumed from " + str(cut / "step_2.pt") in (cut / "train.log").read_text()
    _assert_bitwise_equal(_weights(exp / "final" / "model.pt"), _weights(cut / "final" / "model.pt"))
    filled = [json.loads(x) for x in (cut / "train_log.jsonl").read_text().splitlines() if '"features"' in x]
    total = len((synth_corpus / "train" / "text").read_text().splitlines())  # tiny.yaml: speed factor 1 only
    assert [(r["step"], r["entries"]) for r in filled] == [(0, total // 2), (2, total // 2)]  # rank 0's half
    assert filled[0]["computed"] == filled[0]["entries"] and filled[1]["computed"] == 0
    assert torch.load(out / "rank1.pt", weights_only=True)["skipped"] == 1


# ----------------------------------------------------------------------------- model dirs, average, init
def test_model_dir_loads_and_reports_missing_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from qifusion.errors import UserError
    from qifusion.modeldir import load_model_dir

    loaded = load_model_dir(tiny_model_dir)
    assert loaded.accents == ["en-029", "en-gb-scotland", "en-us"]
    assert loaded.card["epochs"] == 40 and loaded.card["steps"] > 0 and "dev_cer" in loaded.card["dev"]
    assert loaded.tokenizer.vocab_size == loaded.model.vocab_size and not loaded.model.training
    for name in ("model.pt", "accents.txt"):
        broken = tmp_path / name
        shutil.copytree(tiny_model_dir, broken)
        (broken / name).unlink()
        with pytest.raises(UserError, match=name):
            load_model_dir(broken)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, corrupt)
    (corrupt / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt"):
        load_model_dir(corrupt)


def test_average_by_last_and_dev_loss(tiny_model_dir: Path, tmp_path: Path) -> None:
    from qifusion.errors import UserError
    from qifusion.modeldir import load_model_dir
    from qifusion.train.average import average_checkpoints

    exp = tiny_model_dir.parent
    one = average_checkpoints(exp_dir=exp, num=1, by="last", out_dir=tmp_path / "avg1")
    ckpt = torch.load(exp / "epoch_40.pt", weights_only=True)["model"]
    _assert_bitwise_equal(ckpt, _weights(one / "model.pt"))  # the average of one is that checkpoint
    best = average_checkpoints(exp_dir=exp, num=5, by="dev_loss", out_dir=tmp_path / "best")
    card = load_model_dir(best).card
    assert card["by"] == "dev_loss" and len(card["averaged"]) >= 1
    half = average_checkpoints(exp_dir=exp, num=1, by="last", out_dir=tmp_path / "half", fp16=True)
    stored = _weights(half / "model.pt")
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    assert (half / "model.pt").stat().st_size < 0.6 * (one / "model.pt").stat().st_size
    w = load_model_dir(half).model.state_dict()
    assert all(torch.equal(w[k].float(), ckpt[k].half().float()) for k in ckpt if ckpt[k].is_floating_point())
    named = average_checkpoints(exp_dir=exp, num=1, files=["epoch_40.pt"], out_dir=tmp_path / "named")
    _assert_bitwise_equal(ckpt, _weights(named / "model.pt"))
    assert load_model_dir(named).card["averaged"] == ["epoch_40.pt"]
    with pytest.raises(UserError, match=r"step_999\.pt not found"):
        average_checkpoints(exp_dir=exp, num=1, files=["step_999.pt"], out_dir=tmp_path / "none")


def test_init_fine_tunes_onto_a_changed_accent_set(tiny_model_dir: Path, synth_corpus: Path,
                                                   tmp_path: Path) -> None:
    from qifusion.train.run import train

    data = tmp_path / "data"
    for split in ("train", "dev"):
        (data / split).mkdir(parents=True)
        for f in ("wav.scp", "text", "utt2spk"):
            (data / split / f).write_text((synth_corpus / split / f).read_text())
        lines = (synth_corpus / split / "utt2accent").read_text().replace(" en-us\n", " en-new\n")
        (data / split / "utt2accent").write_text(lines)
    exp = tmp_path / "exp"
    train(config_path=TINY, data_dir=data, exp_dir=exp, resume=False, device="cpu", init=tiny_model_dir,
          overrides=["train.max_steps=1", "train.max_epochs=1", "train.lr=1.0e-9", "data.max_duration=20"])
    assert (exp / "accents.txt").read_text().split() == ["en-029", "en-gb-scotland", "en-new"]
    log = (exp / "train.log").read_text()
    assert "accent set changes" in log and "rows remapped by name in aid." in log
    old, new = _weights(tiny_model_dir / "model.pt"), _weights(exp / "final" / "model.pt")
    aid_keys = [k for k in old if k.startswith("aid.") and old[k].shape[0] == 3]
    assert aid_keys
    for k in aid_keys:  # rows of shared accents kept (lr ~ 0), the new accent's row re-initialised
        assert torch.allclose(old[k][:2], new[k][:2], atol=1e-6)
        if old[k].dim() > 1:  # a re-drawn weight row differs; a single re-drawn bias can land close by chance
            assert not torch.allclose(old[k][2], new[k][2], atol=1e-3)
    enc = [k for k in old if k.startswith("encoder.") and old[k].is_floating_point()]
    assert all(torch.allclose(old[k], new[k], atol=1e-6) for k in enc)


def test_average_by_last_takes_newest_steps_of_either_kind(tmp_path: Path) -> None:
    import json

    from qifusion.train.average import select_checkpoints

    index = [{"file": "epoch_1.pt", "step": 96}, {"file": "step_100.pt", "step": 100},
             {"file": "step_200.pt", "step": 200}, {"file": "epoch_2.pt", "step": 200},
             {"file": "step_300.pt", "step": 300}]
    for e in index:
        (tmp_path / e["file"]).write_bytes(b"")
    (tmp_path / "checkpoints.json").write_text(json.dumps(index))
    chosen = [e["file"] for e in select_checkpoints(tmp_path, num=3, by="last")]
    assert chosen == ["step_100.pt", "epoch_2.pt", "step_300.pt"]  # step 200 counted once


def test_resume_takes_a_checkpoint_the_index_missed(tmp_path: Path) -> None:
    """A run killed after a checkpoint's rename but before the index is rewritten: --resume takes that file
    (its step from the name, or from an epoch file's counters), not the newest indexed one."""
    from qifusion.train.checkpoint import latest_checkpoint

    torch.save({"model": {}, "trainer": {"epoch": 1, "step": 2}}, tmp_path / "step_2.pt")
    (tmp_path / "checkpoints.json").write_text(json.dumps([{"file": "step_2.pt", "epoch": 1, "step": 2}]))
    torch.save({"model": {}, "trainer": {"epoch": 1, "step": 4}}, tmp_path / "step_4.pt")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_4.pt"
    torch.save({"model": {}, "trainer": {"epoch": 2, "step": 5}}, tmp_path / "epoch_2.pt")
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch_2.pt"
    (tmp_path / "epoch_3.pt").write_bytes(b"not a checkpoint")  # unreadable: ranked below the readable ones
    assert latest_checkpoint(tmp_path) == tmp_path / "epoch_2.pt"


def test_average_last_loads_the_mean_of_the_newest_checkpoints_and_measures_dev(tmp_path: Path) -> None:
    from qifusion.config import ConfigError
    from qifusion.train.run import _average_last

    model = torch.nn.Linear(2, 1)
    index = []
    for i, step in enumerate((100, 200, 300)):  # weights 1, 2, 3: the newest two average to 2.5
        state = {k: torch.full_like(v, float(i + 1)) for k, v in model.state_dict().items()}
        torch.save({"model": state}, tmp_path / f"step_{step}.pt")
        index.append({"file": f"step_{step}.pt", "step": step})
    (tmp_path / "checkpoints.json").write_text(json.dumps(index))
    seen = []

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        seen.append(float(m.weight[0, 0]))
        return {"dev_cer": 12.5}

    out = _average_last(model, tmp_path, 2, evaluate=evaluate, info=DistInfo())
    assert out == {"files": ["step_200.pt", "step_300.pt"], "dev_cer": 12.5}
    assert seen == [2.5] and torch.equal(model.bias, torch.tensor([2.5]))
    assert _average_last(model, tmp_path, 1, evaluate=evaluate, info=DistInfo()) is None and seen == [2.5]
    with pytest.raises(ConfigError, match=r"train.average_last' \(5\) needs more checkpoints"):
        TrainConfig(average_last=5, keep_checkpoints=2)
    with pytest.raises(ConfigError, match=r"train.average_last' must be >= 0"):
        TrainConfig(average_last=-1)


def test_loss_plot_draws_the_logged_parts(tmp_path: Path) -> None:
    from qifusion.train.plot import plot_loss_curves

    recs = [{"kind": "train", "epoch": 1, "step": s, "loss": 3.0 / s, "loss_ctc": 2.0 / s,
             "loss_aid": 1.0 / s, "aid_acc": 0.1 * s} for s in (1, 2, 3)]
    recs.append({"kind": "epoch", "epoch": 1, "step": 3, "dev_loss": 1.2, "dev_cer": 40.0,
                 "dev_aid_acc": 0.3})
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = plot_loss_curves(tmp_path)
    assert out == tmp_path / "loss.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from qifusion.train.plot import loss_figure

    asr, aid, pct = loss_figure(recs).axes  # titled panels, every axis labelled
    assert [a.get_title() for a in (asr, aid, pct)] == ["ASR losses", "accent-ID loss",
                                                         "dev CER and accent-ID accuracy"]
    assert all(a.get_ylabel() and a.get_xlabel() == "step" for a in (asr, aid, pct))
    assert pct.get_ylabel() == "%"
    # the AID loss has its own axis (its scale is not squashed by the ~100x larger ASR losses)
    assert [list(line.get_ydata()) for line in aid.get_lines()] == [[1.0, 0.5, 1 / 3]]
    assert all(line.get_label() != "train aid" for line in asr.get_lines())
    with pytest.raises(UserError, match=r"train_log\.jsonl does not exist"):
        plot_loss_curves(tmp_path / "missing")
