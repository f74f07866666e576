"""benchmarks.recipe: run names, overrides, recorded curves and the generated page (no training here)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from benchmarks import recipe, recipe_log, recipe_report
from qifusion import omp


def test_run_names_and_overrides() -> None:
    assert recipe.parse("new-qifusion-s3") == ("new", "qifusion", 3)
    with pytest.raises(ValueError, match="RECIPE-SYSTEM-sSEED"):
        recipe.parse("new-conformer-s3")
    ov = recipe.overrides("old-baseline-s1")
    assert "train.seed=1" in ov and f"train.max_minutes={recipe.MINUTES}" in ov
    assert "train.scheduler=cosine" in ov and "model.encoder.embed_scale=false" in ov  # the old recipe
    assert not any(o.startswith("train.scheduler") for o in recipe.overrides("new-baseline-s1"))
    # every earlier recipe restores the 144-channel front end its runs were trained with
    for name in ("v5-qifusion-s0", "v3-baseline-s0", "old-baseline-s0"):
        assert "model.encoder.subsampling_channels=0" in recipe.overrides(name)
    assert not any("subsampling_channels" in o for o in recipe.overrides("new-qifusion-s0"))
    # each recipe resolves to the config its runs had: v6 before VTLP / SpecAugment from 4 / averaging
    from qifusion.config import load_config

    def load(name: str):
        return load_config(recipe.ROOT / recipe.CONFIGS["qifusion"], recipe.overrides(name))

    def resolved(name: str) -> tuple:
        c = load(name)
        enc = c.model.encoder
        return c.data.vtlp, c.data.spec_aug.start_epoch, c.train.average_last, enc.subsampling_channels
    assert resolved("new-qifusion-s0") == (1.2, 4, 4, 64)
    assert resolved("v6-qifusion-s0") == (1.0, 10, 0, 64)
    assert resolved("v5-qifusion-s0") == (1.0, 10, 0, 0)
    assert resolved("v3-qifusion-s0")[:2] == (1.0, 1)  # v3: SpecAugment from epoch 1
    # new (committed): lr 2e-3, CTC weight 0.5, feature cache filled before training, augmented-length
    # buckets, bf16 autocast; fp: the same in float32; ba: fp with the cache filled on first use; c5fc: ba
    # with own-length buckets (10 of them)
    committed, fp = load("new-qifusion-s0-accents"), load("fp-qifusion-s0-accents")
    assert (committed.train.amp, fp.train.amp) == ("bf16", "none")
    fp.train.amp = "bf16"
    assert fp == committed
    new, ba, c5fc, c5, lr2 = (load(f"{r}-qifusion-s0-accents") for r in ("fp", "ba", "c5fc", "c5", "lr2"))
    assert (new.train.lr, new.model.ctc_weight, new.data.feature_cache) == (0.002, 0.5, True)
    assert (new.data.bucket_augmented, new.data.num_buckets) == (True, 30)
    assert [c.data.feature_cache_prefill for c in (new, ba, c5fc)] == [True, False, False]
    ba.data.feature_cache_prefill = True
    assert ba == new
    assert (c5fc.data.bucket_augmented, c5fc.data.num_buckets) == (False, 10)
    c5fc.data.bucket_augmented, c5fc.data.num_buckets = True, 30
    c5fc.data.feature_cache_prefill = True
    assert c5fc == new
    # bfj: the adopted recipe's first run, made before the configs carried it
    assert recipe.committed_recipes("qifusion") == ["bfj", "new"] == recipe.committed_recipes("baseline")
    # c5: c5fc without the cache; lr2: c5 with CTC weight 0.3 (the configs before 2026-12-06's second change)
    assert (c5.model.ctc_weight, c5.data.feature_cache) == (0.5, False)
    c5.data.feature_cache = True
    c5.data.bucket_augmented, c5.data.num_buckets = True, 30
    assert c5 == new
    assert (lr2.train.lr, lr2.model.ctc_weight, lr2.data.feature_cache) == (0.002, 0.3, False)
    # lr1 / lr4: lr2 with the peak lr at 1e-3 (the recipe before 2026-12-06) and 4e-3
    lr1, lr4 = load("lr1-qifusion-s0-accents"), load("lr4-qifusion-s0-accents")
    assert [c.train.lr for c in (lr1, lr4)] == [0.001, 0.004]
    lr1.train.lr = lr4.train.lr = lr2.train.lr
    assert lr1 == lr2 and lr4 == lr2
    # cd2: lr2 with the last 20% of the minutes a cool-down to lr 0
    cd2 = load("cd2-qifusion-s0-accents")
    assert (cd2.train.cooldown, lr2.train.cooldown) == (0.2, 0.0)
    cd2.train.cooldown = lr2.train.cooldown
    assert cd2 == lr2
    lr2.model.ctc_weight, lr2.data.feature_cache = 0.5, True
    lr2.data.bucket_augmented, lr2.data.num_buckets = True, 30
    assert lr2 == new
    # the curve plot has a colour for every recipe and system (a missing one is a KeyError at report time)
    assert {(r, s) for r in recipe.RECIPES for s in recipe.CONFIGS} <= recipe_report.COLOURS.keys()


def _fake_exp(path: Path) -> Path:
    path.mkdir(parents=True)
    recs = [{"kind": "features", "step": 0, "minutes": 1.88, "entries": 30, "computed": 30, "unreadable": 0},
            {"kind": "train", "step": 25, "train_minutes": 1.0, "loss": 150.0},
            {"kind": "dev", "step": 250, "train_minutes": 10.0, "dev_cer": 50.0, "dev_aid_acc": 0.2},
            {"kind": "epoch", "epoch": 1, "step": 389, "train_minutes": 16.0, "dev_cer": 45.0},
            {"kind": "dev", "step": 500, "train_minutes": 20.0, "dev_cer": 19.5, "dev_aid_acc": 0.7}]
    (path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = yaml.safe_load((recipe.ROOT / "conf" / "qifusion_small.yaml").read_text())
    cfg["model"]["ctc_weight"] = 0.7
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return path


def test_recorded_exploration_and_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipe, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(recipe_report, "RESULTS", tmp_path / "results")
    exp = _fake_exp(tmp_path / "exp")
    assert [p["step"] for p in recipe_log.curve(exp)] == [250, 389, 500]
    assert recipe_log.feature_minutes(recipe_log.log_records(exp)) == 1.88
    out = recipe.record_exploration("try-ctc07", exp, note="one thread")
    rec = json.loads(out.read_text())
    assert rec["epoch_ends"] == [{"epoch": 1, "step": 389, "dev_cer": 45.0}]
    lines = recipe_report.render_explorations(recipe_report.load_explorations())
    row = next(line for line in lines if line.startswith("| try-ctc07"))
    assert "model.ctc_weight=0.7" in row  # what differs from the committed config is named
    assert "19.5 [70.0%]" in row and "50.0 [20.0%]" in row
    # a finished benchmark run: minutes to the target, seeds that reached it
    confusion = {"labels": ["a", "b"], "matrix": [[3, 1], [0, 4]]}
    result = {"run": "new-qifusion-s0", "recipe": "new", "system": "qifusion", "seed": 0,
              "minutes_to_target": 20.0, "converged": True, "curve": recipe_log.curve(exp),
              "final_averages": ["step_250.pt", "step_500.pt"],
              "dev": {"ctc_greedy": {"cer": 19.2},
                      "attention_rescoring": {"cer": 18.0, "wer": 40.0, "aid_accuracy": 0.7,
                                              "aid_confusion": confusion,
                                              "per_accent_cer": {"a": 12.0, "b": 30.0}},
                      "lm_rescoring": {"cer": 19.0, "wer": 30.0}}}
    page = recipe_report.render([result])
    assert ("| new-qifusion-s0 | benchmark | new | qifusion | 0 | 1 | 20.0 | 19.5 | 19.20 (avg of 2) | "
            "18.00 / 40.00 | 19.00 / 30.00 | 70.0% | 500 |") in page  # threads: 1 before --threads
    assert "| 19.5 | 19.20 | 18.00" in recipe_report.render([{**result, "final_averages": None}])
    assert "| 70.0% | 500 (+ 1.9 min of fbank before training) |" in recipe_report.render(
        [{**result, "feature_minutes": 1.88}])
    del result["dev"]["lm_rescoring"]  # a run evaluated before the LM row: a dash
    assert "| 18.00 / 40.00 | - | 70.0% |" in recipe_report.render([result])
    assert "benchmark corpus, new recipe, qifusion: 1 of 1 seeds reached dev CER <= 20%" in page
    # the committed config's seeds are counted together, whatever recipe name resolves to it (c5fc did
    # until 2026-12-07; here it is made to again)
    other = {**result, "run": "c5fc-qifusion-s1", "recipe": "c5fc", "seed": 1, "converged": False}
    page2 = recipe_report.render([result, other])
    assert "the committed qifusion config** (recipes bfj, new): 1 of 1 seeds" in page2
    monkeypatch.setattr(recipe_report, "committed_recipes", lambda system: ["new", "c5fc"])
    assert ("**benchmark corpus, the committed qifusion config** (recipes new, c5fc): 1 of 2 seeds reached "
            "dev CER <= 20% within 60 minutes (seeds 0, 1).") in recipe_report.render([result, other])
    assert "committed qifusion config" not in recipe_report.render([{**result, "recipe": "lr2"}])
    assert "| a | 3 | 1 |" in page
    assert "| new-qifusion-s0 | a 12.0, b 30.0 | 2.50 | - |" in page  # worst / best; no majority accent here
    result["dev"]["attention_rescoring"]["per_accent_cer"] = {"en-us": 12.0, "b": 30.0}  # majority: en-us
    assert "| en-us 12.0, b 30.0 | 2.50 | 2.50 |" in recipe_report.render([result])
    assert "- new-qifusion-s0: a note" in recipe_report.render([{**result, "note": "a note"}])
    # two versions of a preset are told apart by the fingerprint of its speakers table
    corpus = tmp_path / "accents"
    corpus.mkdir()
    assert recipe.corpus_fingerprint(corpus) is None
    (corpus / "speakers.json").write_text('[{"speaker": "a"}]')
    fp = recipe.corpus_fingerprint(corpus)
    (corpus / "speakers.json").write_text('[{"speaker": "b"}]')
    assert fp and len(fp) == 8 and recipe.corpus_fingerprint(corpus) != fp
    runs = [{**result, "run": "new-qifusion-s0-accents", "corpus": "accents"},
            {**result, "run": "new-qifusion-s1-accents", "corpus": "accents", "corpus_fingerprint": fp}]
    # re-made on a changed corpus, a run's old result stays, under the old corpus's name
    recipe.save_result(runs[0])
    recipe.save_result({**runs[0], "corpus_fingerprint": fp})
    recipe.save_result({**runs[0], "corpus_fingerprint": fp, "seed": 5})  # same corpus: replaced
    kept = sorted(p.name for p in (tmp_path / "results").glob("new-qifusion-s0-accents*.json"))
    assert kept == ["new-qifusion-s0-accents.json", "new-qifusion-s0-accents@none.json"]
    assert json.loads((tmp_path / "results" / "new-qifusion-s0-accents.json").read_text())["seed"] == 5
    page = recipe_report.render(runs)
    assert f"| new-qifusion-s1-accents | accents@{fp} | new |" in page
    assert "accents corpus, new recipe, qifusion: 1 of 1 seeds" in page
    assert f"accents@{fp} corpus, new recipe, qifusion: 1 of 1 seeds" in page
    # loaded back, the kept result is named apart from the current one
    loaded = [r for r in recipe_report.load_results() if r["run"] == "new-qifusion-s0-accents"]
    assert sorted(r["label"] for r in loaded) == ["new-qifusion-s0-accents", "new-qifusion-s0-accents@none"]
    page = recipe_report.render(loaded)
    assert "| new-qifusion-s0-accents@none | accents | new |" in page
    assert "### AID confusion on dev, new-qifusion-s0-accents@none " in page


def test_accent_settling_measures() -> None:
    from benchmarks.accent_latency import accent_at, settle_time

    pts = [(0.64, "a"), (1.28, "b"), (1.92, "a"), (2.56, "a")]
    assert settle_time(pts) == 1.92  # "a" for good from the chunk ending at 1.92 s
    assert settle_time([(0.64, "b"), (1.28, "b")]) == 0.64
    assert accent_at(pts, 0.5) == "a"  # no chunk ended yet: the first chunk's decision
    assert accent_at(pts, 1.3) == "b" and accent_at(pts, 3.0) == "a"


def test_accent_stream_measure_and_page_row(tiny_model_dir: Path, synth_corpus: Path) -> None:
    from benchmarks.accent_latency import measure

    res = measure(tiny_model_dir, synth_corpus / "dev", chunk=4, limit=3)
    assert res["utterances"] == 3 and res["chunk_seconds"] == pytest.approx(0.16)
    assert 0.0 <= res["settle_s_median"] <= 10.0
    row = {"run": "r", "recipe": "new", "system": "qifusion", "seed": 0, "minutes_to_target": None,
           "converged": False, "curve": [], "accent_stream": res,
           "dev": {"attention_rescoring": {"cer": 50.0, "aid_accuracy": 0.5}}}
    page = recipe_report.render([row])
    assert f"| r | {100 * res['accuracy_at']['1.0']:.1f}% |" in page


def test_training_runs_with_the_omp_waits_and_records_them(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each start trains with a short spin before sleeping, whatever the shell set, and says so in waits.json;
    a run made before waits.json existed had passive waits without a spin. Each start's host pace is measured
    with the training's own threads and waits and kept in pace.json (None where it failed)."""
    seen, paced = [], []
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setattr(recipe.subprocess, "call", lambda cmd, **kw: seen.append(kw["env"]) or 0)
    monkeypatch.setattr(recipe, "host_pace", lambda threads, env: paced.append((threads, env)) or
                        [2.5, None][len(paced) - 1])
    exp = tmp_path / "new-baseline-s0-accents"
    assert recipe_log.run_waits(exp) == [] and recipe_log.run_paces(exp) == []
    for _ in range(2):
        assert recipe.train("new-baseline-s0-accents", threads=2, exp=exp) == 0
    assert [(e["OMP_WAIT_POLICY"], e["GOMP_SPINCOUNT"], e["OMP_NUM_THREADS"]) for e in seen] == \
        [("PASSIVE", str(omp.SPIN_COUNT), "2")] * 2
    assert [(t, e) for t, e in paced] == [(2, e) for e in seen]
    assert recipe_log.run_paces(exp) == [2.5, None]
    assert recipe_log.run_waits(exp) == [f"OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT={omp.SPIN_COUNT}"] * 2
    (exp / "waits.json").unlink()
    assert recipe_log.run_waits(exp) == []  # no start trained here
    (exp / "train_log.jsonl").write_text("")
    assert recipe_log.run_waits(exp) == ["OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=-"]


def test_the_passive_waits_recipe_trains_without_a_spin_and_is_not_the_committed_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pw`` is the committed config trained as every run before qifusion/omp.py was: passive waits, no spin.
    Its seeds are not counted as the committed recipe's (the same seed trained twice would count twice)."""
    seen = []
    monkeypatch.setattr(recipe.subprocess, "call", lambda cmd, **kw: seen.append(kw["env"]) or 0)
    monkeypatch.setattr(recipe, "host_pace", lambda threads, env: None)
    exp = tmp_path / "pw-qifusion-s2-accents"
    assert recipe.train("pw-qifusion-s2-accents", threads=2, exp=exp) == 0
    assert (seen[0]["OMP_WAIT_POLICY"], seen[0]["GOMP_SPINCOUNT"]) == ("PASSIVE", "0")
    assert recipe_log.run_waits(exp) == ["OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=0"]
    assert recipe.overrides("pw-qifusion-s2-accents") == recipe.overrides("fp-qifusion-s2-accents")
    assert "pw" not in recipe.committed_recipes("qifusion")


def test_the_heap_allocator_is_the_recipes_and_the_log_names_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``new`` (the committed recipe) and its variants leave the allocator to ``qifusion train`` (``auto``:
    jemalloc under a CPU bf16 autocast), ``bfj`` asks for jemalloc without page decay (as its run trained),
    every other recipe for the system's malloc (as their runs did); the pace is measured the same way for
    all; each start's allocator is read from train.log."""
    trained, paced = {}, []

    def call(cmd: list[str], **kw: dict[str, str]) -> int:
        trained[Path(cmd[cmd.index("--exp") + 1]).name] = kw["env"]
        return 0

    monkeypatch.setattr(recipe.subprocess, "call", call)
    monkeypatch.setattr(recipe, "host_pace", lambda threads, env: paced.append(dict(env)))
    names = ("bfj-baseline-s3-accents", "new-baseline-s3-accents", "fp-baseline-s3-accents",
             "oracle-baseline-s2-accents")
    for name in names:
        assert recipe.train(name, threads=2, exp=tmp_path / name) == 0
    bfj, new, fp, oracle = (trained[name] for name in names)
    assert (bfj["QIFUSION_MALLOC"], bfj["MALLOC_CONF"]) == ("jemalloc", recipe.malloc.NO_DECAY_CONF)
    assert new["QIFUSION_MALLOC"] == oracle["QIFUSION_MALLOC"] == "auto" and "MALLOC_CONF" not in new
    assert fp["QIFUSION_MALLOC"] == "system"
    assert len(paced) == 4 and all("jemalloc" not in env.get("LD_PRELOAD", "") for env in paced)
    assert "fp" not in recipe.committed_recipes("baseline")
    start = "2026 [rank 0] INFO model: 3.76M parameters on cpu, world size 1, 2 threads (OMP_WAIT_POLICY=-"
    heap = "heap allocator: jemalloc (/x/libjemalloc.so.2)"
    (tmp_path / "train.log").write_text(f"{start})\n{start}; {heap})\n")
    assert recipe_log.run_heaps(tmp_path) == ["system", "jemalloc (/x/libjemalloc.so.2)"]


def test_the_precision_of_each_start_is_read_from_train_log_and_shown(tmp_path: Path) -> None:
    """``train.amp: bf16`` trains in float32 on a CPU without bf16 matmuls: each start's logged precision is
    recorded, and the page shows it beside the CPU; runs logged before the line existed show none."""
    assert recipe_log.run_precisions(tmp_path) == []
    info = "2026-12-08 02:00:00 [rank 0] INFO training precision: "
    (tmp_path / "train.log").write_text(f"{info}float32\nother line\n{info}bf16 autocast\n")
    assert recipe_log.run_precisions(tmp_path) == ["float32", "bf16 autocast"]
    row = {"cpus": ["AMD EPYC"], "host_pace_s": [3.4], "precisions": ["float32"]}
    assert recipe_report._cpus(row) == " (AMD EPYC; pace 3.40 s; float32)"
    assert recipe_report._cpus({"cpus": ["AMD EPYC"]}) == " (AMD EPYC)"


def test_host_pace_reads_the_encoder_benchmark_and_never_stops_a_run(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """The pace is the benchmark's train_step_s at the run's threads; a benchmark that fails or prints no
    JSON gives None and a line naming why, and the page shows each start's pace beside the CPU."""
    calls = []

    def fake_run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess:
        calls.append(cmd)
        out = 'warming up\n{"train_step_s": 1.9731, "params_M": 6.6}\n' if len(calls) == 1 else "oops\n"
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    monkeypatch.setattr(recipe.subprocess, "run", fake_run)
    assert recipe.host_pace(2, {}) == 1.9731
    assert calls[0][1:] == [*recipe.PACE, "--threads", "2"]
    assert recipe.host_pace(1, {}) is None
    assert "host pace not measured" in capsys.readouterr().err
    row = {"cpus": ["AMD EPYC"], "host_pace_s": [1.9731, None]}
    assert recipe_report._cpus(row) == " (AMD EPYC; pace 1.97, - s)"
    assert recipe_report._cpus({"cpus": ["AMD EPYC"]}) == " (AMD EPYC)"
