"""Study runs trained on a lent GPU (benchmarks/accuracy/gpu_train.sh): only their fp16 average comes back,
so the CPU side must treat them as finished, evaluate that model, ship a copy of it, and say where they
trained."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.accuracy import eval_run, ship, train_run
from benchmarks.accuracy.spec import BY_NAME, MAX_STEPS


@pytest.fixture
def exp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for mod in (eval_run, train_run, ship):
        monkeypatch.setattr(mod, "EXP", tmp_path)
    return tmp_path


def _gpu_run(exp: Path, name: str) -> Path:
    d = exp / name
    (d / "model").mkdir(parents=True)
    (d / "model" / "model.pt").write_bytes(b"weights")
    (d / "model" / "units.txt").write_text("a 1\n")
    (d / "trained_on.txt").write_text("NVIDIA H200\n")
    return d


def test_gpu_run_is_finished_and_evaluates_its_returned_average(exp: Path, tmp_path: Path) -> None:
    run = BY_NAME["oracle_s0"]
    assert not train_run.finished(run)
    d = _gpu_run(exp, run.name)
    assert train_run.finished(run)
    assert eval_run.trained_on(d) == "NVIDIA H200"
    assert eval_run.average(run) == d / "model"
    # shipping copies that average (it is already float16) instead of averaging absent checkpoints
    out = tmp_path / "shipped"
    assert eval_run.average(run, out=out, fp16=True) == out
    assert (out / "model.pt").read_bytes() == b"weights" and (out / "units.txt").read_text() == "a 1\n"
    assert not list(out.glob(".*.tmp"))
    with pytest.raises(SystemExit, match="only its float16 average"):
        eval_run.average(run, out=tmp_path / "fp32", fp16=False)
    assert "one NVIDIA H200 GPU" in ship.where(run.name)


def test_cpu_run_needs_its_last_step_checkpoint(exp: Path) -> None:
    run = BY_NAME["baseline_s0"]
    d = exp / run.name
    (d / "model").mkdir(parents=True)
    (d / "model" / "model.pt").write_bytes(b"weights")  # an averaged model alone does not finish a CPU run
    assert not train_run.finished(run)
    assert eval_run.trained_on(d) == "cpu" and ship.where(run.name) == "one CPU thread"
    (d / f"step_{MAX_STEPS}.pt").write_bytes(b"")
    assert train_run.finished(run)


def test_gpu_run_without_its_average_is_named(exp: Path) -> None:
    run = BY_NAME["aid03_s0"]
    d = _gpu_run(exp, run.name)
    (d / "model" / "model.pt").unlink()
    assert not train_run.finished(run)
    with pytest.raises(SystemExit, match="aid03_s0: no step checkpoints here and no averaged model"):
        eval_run.average(run)
