"""Recipes (`recipes/*/run.sh`): option handling, the report table, and every stage chained on tiny data.

The smoke runs use `conf/tiny.yaml` for a couple of epochs on the session's synthetic corpus and on the
fake KeSpeech / RAMC layouts of `tests/fake_corpora.py`, so they check wiring and outputs, not accuracy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from qifusion.data.manifest import load_data_dir
from qifusion.data.prepare.kespeech import SUBDIALECTS
from tests.fake_corpora import fake_kespeech, fake_ramc

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "conf" / "tiny.yaml")
TINY_TRAIN = "--set train.max_epochs=2 --set train.log_interval=1"
ACCENT_PARTS_OFF = "--set model.accent.use_laf=false --set model.accent.use_aid=false " \
                   "--set model.accent.use_fusion=false"


def _recipe_env() -> dict[str, str]:
    exe = Path(sys.executable)
    qifusion = exe.with_name("qifusion")
    return {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHON": str(exe),
            "QIFUSION": str(qifusion) if qifusion.is_file() else f"{exe} -m qifusion"}


def run_recipe(name: str, *args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``recipes/NAME/run.sh ARGS`` in ``cwd``; with ``ok``, fail the test (stderr tail) on rc != 0."""
    proc = subprocess.run(["bash", str(ROOT / "recipes" / name / "run.sh"), *args], cwd=cwd,
                          env=_recipe_env(), capture_output=True, text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, f"{name} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def _report(path: Path) -> dict:
    return json.loads((path / "report.json").read_text())


# --------------------------------------------------------------------------------------------
# options and the report table (fast)
# --------------------------------------------------------------------------------------------
def test_options(tmp_path: Path) -> None:
    p = run_recipe("accents_en", "--stage", "1", "--bogus", "x", cwd=tmp_path, ok=False)
    assert p.returncode == 1 and "error: unknown option --bogus (see --help)" in p.stderr
    p = run_recipe("accents_en", "--stage=3", "--stop-stage", "1", cwd=tmp_path, ok=False)
    assert p.returncode == 1 and "--stage 3 is after --stop-stage 1" in p.stderr
    p = run_recipe("kespeech", "extra", cwd=tmp_path, ok=False)
    assert p.returncode == 1 and "unexpected argument 'extra'" in p.stderr
    p = run_recipe("kespeech", "--stage", "0", "--stop-stage", "0", cwd=tmp_path, ok=False)
    assert p.returncode == 1 and "stage 0 needs --kespeech-root DIR" in p.stderr
    p = run_recipe("magicdata_ramc", "--stage", "3", "--average-num", "0", cwd=tmp_path, ok=False)
    assert p.returncode == 1 and "model dir exp/magicdata_ramc/qifusion/final not found" in p.stderr
    p = run_recipe("magicdata_ramc", "--help", cwd=tmp_path)
    assert "0 prepare, 1 train, 2 average,\n3 decode, 4 per-region table" in p.stdout
    p = run_recipe("accents_en", "--stage", "9", "--stop-stage", "9", cwd=tmp_path)
    assert "done (stages 9..9)" in p.stderr and "stage 0" not in p.stderr
    assert list(tmp_path.iterdir()) == []


def _load_report_module() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("recipes_report", ROOT / "recipes" / "_report.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_report_table() -> None:
    mod = _load_report_module()

    def rep(cer: float, aid: float | None, chunk: int, per: dict[str, float]) -> dict:
        return {"cer": cer, "wer": 2 * cer, "aid_accuracy": aid, "mode": "ctc_greedy", "chunk_size": chunk,
                "num_utts": 7, "per_accent": {a: {"cer": c, "num_utts": 3} for a, c in per.items()}}

    systems = {
        "base": {("ctc_greedy", 16): rep(20.0, None, 16, {"a": 10.0, "b": 0.0}),
                 ("ctc_greedy", -1): rep(10.0, None, -1, {"a": 8.0})},
        "qf": {("ctc_greedy", 16): rep(15.0, 0.875, 16, {"a": 12.0, "b": 1.0})},
    }
    md = mod.build_markdown(systems, reference="base", title="T", label="region")
    lines = md.splitlines()
    head = "| mode | chunk | base CER | qf CER | qf vs base | base WER | qf WER | base AID | qf AID |"
    assert head in lines
    rows = [ln for ln in lines if ln.startswith("| ctc_greedy")]
    assert rows == ["| ctc_greedy | full | 10.00 | - | - | 20.00 | - | - | - |",  # full context first
                    "| ctc_greedy | 16 | 20.00 | 15.00 | +25.0% | 40.00 | 30.00 | - | 87.50 |"]
    assert "## CER per region: ctc_greedy, chunk 16" in lines
    assert "| a | 3 | 10.00 | 12.00 | -20.0% |" in lines and "| b | 3 | 0.00 | 1.00 | - |" in lines


# --------------------------------------------------------------------------------------------
# smoke runs: every stage, tiny settings
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_accents_en_recipe(synth_corpus: Path, tmp_path: Path) -> None:
    # stage 0 on its own (one accent, 6 utterances), then 1-5 on the session's synthetic corpus
    run_recipe("accents_en", "--stage", "0", "--stop-stage", "0", "--preset", "demo", "--data", "d",
               "--synth-args", "--utts-per-accent 6 --accents en-us", "--synth-jobs", "1", cwd=tmp_path)
    assert [len(load_data_dir(tmp_path / "d" / s)) for s in ("train", "dev", "test")] == [4, 1, 1]

    p = run_recipe("accents_en", "--stage", "1", "--data", str(synth_corpus), "--exp", "e",
                   "--baseline-config", TINY, "--qifusion-config", TINY, "--train-args", TINY_TRAIN,
                   "--baseline-args", ACCENT_PARTS_OFF, "--average-num", "2",
                   "--decode-modes", "attention_rescoring", "--chunk-sizes", "16", cwd=tmp_path)
    exp = tmp_path / "e"
    for name in ("baseline", "qifusion"):
        for model in ("final", "avg_2"):
            assert all((exp / name / model / f).is_file() for f in ("model.pt", "card.json", "units.txt"))
    assert "use_laf: false" in (exp / "baseline" / "final" / "config.yaml").read_text()  # own args reached it
    assert "use_laf: true" in (exp / "qifusion" / "final" / "config.yaml").read_text()
    reps = {name: _report(exp / name / "decode_avg_2" / "attention_rescoring_chunk16")
            for name in ("baseline", "qifusion")}
    got = [(r["mode"], r["chunk_size"], r["num_utts"]) for r in reps.values()]
    assert got == [("attention_rescoring", 16, 3)] * 2
    assert reps["baseline"]["aid_accuracy"] is None  # no AID head in the baseline
    assert 0.0 <= reps["qifusion"]["aid_accuracy"] <= 1.0
    # the report stage's table holds the decode reports' numbers
    md = (exp / "RESULTS.md").read_text()
    assert md == p.stdout[p.stdout.index("# accents_en"):]
    b, q = reps["baseline"]["cer"], reps["qifusion"]["cer"]
    rel = f"{100 * (b - q) / b:+.1f}%" if b else "-"
    assert f"| attention_rescoring | 16 | {b:.2f} | {q:.2f} | {rel} |" in md
    assert re.search(r"^\| en-gb-scotland \| 1 \| ", md, flags=re.M)


@pytest.mark.slow
def test_kespeech_recipe(tmp_path: Path) -> None:
    """All stages; training under torchrun with 2 CPU processes (gloo), the recipe's multi-GPU path."""
    fake_kespeech(tmp_path / "KeSpeech")
    p = run_recipe("kespeech", "--kespeech-root", str(tmp_path / "KeSpeech"), "--config", TINY,
                   "--device", "cpu", "--nproc", "2", "--average-num", "2",
                   "--train-args", TINY_TRAIN + " --set data.max_duration=2",
                   "--decode-modes", "ctc_greedy", "--chunk-sizes", "16", cwd=tmp_path)
    assert "torch.distributed.run --standalone --nproc_per_node 2 -m qifusion train" in p.stderr
    assert "world size 2" in p.stderr
    data = tmp_path / "data/kespeech"
    assert [len(load_data_dir(data / s)) for s in ("train", "dev", "test")] == [18, 18, 9]
    exp = tmp_path / "exp/kespeech/qifusion"
    assert (exp / "epoch_2.pt").is_file() and (exp / "avg_2" / "model.pt").is_file()
    rep = _report(exp / "decode_avg_2" / "ctc_greedy_chunk16")
    assert (rep["num_utts"], sorted(rep["per_accent"])) == (9, sorted(SUBDIALECTS))
    md = (exp / "RESULTS.md").read_text()
    assert "## CER per subdialect: ctc_greedy, chunk 16" in md
    for dialect in SUBDIALECTS:
        assert f"| {dialect} | 1 | {rep['per_accent'][dialect]['cer']:.2f} |" in md


@pytest.mark.slow
def test_magicdata_ramc_recipe(tmp_path: Path) -> None:
    fake_ramc(tmp_path / "ramc", split_dirs=True)
    args = ["--ramc-root", str(tmp_path / "ramc"), "--config", TINY, "--device", "cpu",
            "--train-args", TINY_TRAIN, "--average-num", "2", "--average-by", "last"]
    run_recipe("magicdata_ramc", *args, "--decode-modes", "ctc_greedy", "--chunk-sizes", "-1", cwd=tmp_path)
    data = tmp_path / "data/magicdata_ramc"
    assert (data / "test" / "segments").is_file() and len(load_data_dir(data / "test")) == 2
    exp = tmp_path / "exp/magicdata_ramc/qifusion"
    assert json.loads((exp / "avg_2" / "card.json").read_text())  # a complete model dir
    rep = _report(exp / "decode_avg_2" / "ctc_greedy_full")
    assert sorted(rep["per_accent"]) == ["Beijing", "Sichuan"] and rep["num_utts"] == 2
    assert "## CER per region: ctc_greedy, chunk full" in (exp / "RESULTS.md").read_text()
    # re-running the training stage resumes from the checkpoints instead of being refused
    p = run_recipe("magicdata_ramc", *args, "--stage", "1", "--stop-stage", "1", cwd=tmp_path)
    assert "holds checkpoints: resuming" in p.stderr and "resumed from" in p.stderr


@pytest.mark.parametrize("script", ["accents_en", "kespeech", "magicdata_ramc"])
def test_scripts_are_executable(script: str) -> None:
    assert os.access(ROOT / "recipes" / script / "run.sh", os.X_OK)
