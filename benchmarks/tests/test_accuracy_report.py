"""The accuracy study's report (benchmarks/accuracy/report.py) on tiny fake per-run result JSONs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.accuracy.report import generate, is_up_to_date
from benchmarks.accuracy.report_doc import Study
from benchmarks.accuracy.report_main import targets
from benchmarks.accuracy.report_stats import bootstrap_reduction, compare, load_results, pooled_cer, run_cer
from benchmarks.accuracy.spec import COMMON
from qifusion.errors import DataError

ACCENTS = ["en-us", "en-us", "en-us", "en-gb-scotland", "en-gb-scotland", "en-gb-scotland"]
REF = [10, 20, 30, 10, 20, 30]
BASE_ERR = [2, 4, 6, 2, 2, 4]  # 20 errors / 120 chars = 16.67 %; minority 8 / 60
MODES = [f"{m}@{c}" for m in ("ctc_greedy", "attention_rescoring") for c in ("full", "16", "8", "4")]


def _mode(errors: list[int], preds: list[str | None]) -> dict:
    return {"cer": 100 * sum(errors) / sum(REF), "wer": 0.0, "rtf": 0.1, "per_accent": {},
            "aid_accuracy": None, "errors": errors, "pred_accent": preds}


def _set(errors_by_mode: dict[str, list[int]], preds: list[str | None]) -> dict:
    utts = {"ids": [f"u{i}" for i in range(6)], "accent": ACCENTS, "ref_chars": REF}
    return {"data": "data/x", "utts": utts, "modes": {k: _mode(v, preds) for k, v in errors_by_mode.items()}}


def fake_run(name: str, *, group: str, seed: int, errors: list[int], chunk16: list[int] | None = None,
             aid: bool = False) -> dict:
    """A result JSON: ``errors`` in every mode except ``chunk16`` (errors at chunk 16) when given."""
    qif = name.startswith(("qifusion", "unseen_qifusion"))
    preds = list(ACCENTS) if aid else [None] * 6
    by_mode = {k: list(chunk16 if (chunk16 is not None and k.endswith("@16")) else errors) for k in MODES}
    run = {
        "run": name, "group": group,
        "config": "conf/qifusion_small.yaml" if qif else "conf/baseline_small.yaml",
        "seed": seed, "overrides": [*COMMON, f"train.seed={seed}"], "without_accent": None,
        "num_params": 1_500_000, "accents": ["en-gb-scotland", "en-us"],
        "train": {"steps": 1200, "final_loss": 20.5, "audio_per_s_median": 30.0,
                  "epochs": [{"epoch": 1, "step": 600, "dev_loss": 30.0, "dev_cer": 20.0},
                             {"epoch": 2, "step": 1200, "dev_loss": 25.0, "dev_cer": 15.0}],
                  "curve": [[20, 100.0], [600, 40.0], [1200, 20.0]]},
        "sets": {"test": _set(by_mode, preds),
                 "dev": _set({k: by_mode[k] for k in ("attention_rescoring@full", "attention_rescoring@16")},
                             preds),
                 "heldout": _set({k: by_mode[k] for k in MODES if k.endswith(("@full", "@16"))}, preds)},
        "block_probe": {"blocks": [1, 2, 3], "acc": [0.5, 0.7, 0.9]},
        "eval_wall_s": 12.0,
    }
    if qif:
        run["laf"] = {"layers": [6, 7], "weights": [0.4, 0.6]}
    return run


def write_runs(d: Path, runs: list[dict]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for r in runs:
        (d / f"{r['run']}.json").write_text(json.dumps(r))
    return d


def half(errs: list[int]) -> list[int]:
    return [e // 2 for e in errs]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """baseline 2 seeds (same errors), qifusion 1 seed with half the errors (chunk 16: 20% worse than full),
    AID always right."""
    return write_runs(tmp_path / "acc", [
        fake_run("baseline_s0", group="main", seed=0, errors=BASE_ERR),
        fake_run("baseline_s1", group="main", seed=1, errors=BASE_ERR),
        fake_run("qifusion_s0", group="main", seed=0, errors=half(BASE_ERR), chunk16=[1, 2, 3, 1, 2, 3],
                 aid=True),
        fake_run("oracle_s0", group="ablation", seed=0, errors=BASE_ERR),
    ])


def test_pooled_cer_and_subsets(results: Path) -> None:
    run = load_results(results)["baseline_s0"]
    assert pooled_cer(np.array(BASE_ERR, float), np.array(REF, float)) == pytest.approx(100 * 20 / 120)
    assert run_cer(run, "test", "attention_rescoring@full") == pytest.approx(100 * 20 / 120)
    assert run_cer(run, "test", "attention_rescoring@full", "minority") == pytest.approx(100 * 8 / 60)
    assert run_cer(run, "test", "attention_rescoring@full", "en-us") == pytest.approx(100 * 12 / 60)
    assert run_cer(run, "test", "attention_rescoring@full", "seen:en-us") == pytest.approx(100 * 8 / 60)
    assert run_cer(run, "dev", "ctc_greedy@4") is None  # dev is decoded in rescoring only


def test_bootstrap_hand_checkable_cases() -> None:
    ref = np.array(REF, float)
    base = np.array([BASE_ERR], float)
    same = bootstrap_reduction(base, base.copy(), ref)
    assert (same.point, same.lo, same.hi) == (0.0, 0.0, 0.0) and not same.excludes_zero
    halved = bootstrap_reduction(base, base / 2, ref)
    assert (halved.point, halved.lo, halved.hi) == (pytest.approx(0.5),) * 3
    assert halved.excludes_zero and halved.cer_b == pytest.approx(100 * 20 / 120)
    # seed pooling: the system's CER is the mean of its seeds' CERs
    two = bootstrap_reduction(np.array([BASE_ERR, [0] * 6], float), base / 2, ref)
    assert two.cer_b == pytest.approx(100 * 10 / 120) and two.point == pytest.approx(0.0)


def test_bootstrap_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(5)
    ref = rng.integers(5, 40, size=30).astype(float)
    eb = rng.integers(0, 6, size=(2, 30)).astype(float)
    eq = rng.integers(0, 5, size=(3, 30)).astype(float)
    got = bootstrap_reduction(eb, eq, ref, b=300, seed=7)
    idx = np.random.default_rng(7).integers(0, 30, size=(300, 30))
    reds = []
    for row in idx:
        cb = np.mean([100 * e[row].sum() / ref[row].sum() for e in eb])
        cq = np.mean([100 * e[row].sum() / ref[row].sum() for e in eq])
        reds.append(1 - cq / cb)
    lo, hi = np.percentile(reds, [2.5, 97.5])
    assert (got.lo, got.hi) == (pytest.approx(lo), pytest.approx(hi))
    point = 1 - np.mean(100 * eq.sum(1) / ref.sum()) / np.mean(100 * eb.sum(1) / ref.sum())
    assert got.point == pytest.approx(point) and got.lo < got.point < got.hi


def test_compare_pools_seeds_and_rejects_different_utterances(results: Path) -> None:
    runs = load_results(results)
    r = compare([runs["baseline_s0"], runs["baseline_s1"]], [runs["qifusion_s0"]], "test", "ctc_greedy@8")
    assert (r.point, r.seeds_b, r.seeds_q) == (pytest.approx(0.5), 2, 1)
    other = json.loads(json.dumps(runs["qifusion_s0"]))
    other["sets"]["test"]["utts"]["ids"][0] = "zz"
    with pytest.raises(DataError, match="different test utterances"):
        compare([runs["baseline_s0"]], [other], "test", "ctc_greedy@8")


def test_targets_met_and_not_met(results: Path, tmp_path: Path) -> None:
    rows = {t.target: t for t in targets(Study(load_results(results)))}
    full = rows["Relative CER reduction vs same-size baseline, all accents, rescoring full: >= 15%, "
                "95% CI excluding 0"]
    assert full.measured == "+50.0% [+50.0%, +50.0%]" and full.met == "yes (provisional)"
    assert "baseline 2/6 seeds, qifusion 1/6 seeds" in full.note
    c16 = rows[full.target.replace("rescoring full", "rescoring 16")]
    assert c16.met == "yes (provisional)" and c16.measured.startswith("+40.0%")  # 12 vs 20 errors
    gap = rows["Chunk-16 CER within 10% relative of full context (Qifusion, rescoring, test)"]
    assert gap.measured.startswith("+20.0%") and gap.met.startswith("no")  # 12 vs 10 errors
    assert rows["AID accuracy >= 95% on test speakers (Qifusion, full context)"].met.startswith("yes")
    held = rows["Held-back set: reduction >= 10% (shipped seeds, rescoring full)"]
    assert held.met.startswith("yes") and "baseline_s0 vs qifusion_s0" in held.note
    same = write_runs(tmp_path / "same", [fake_run("baseline_s0", group="main", seed=0, errors=BASE_ERR),
                                          fake_run("qifusion_s0", group="main", seed=0, errors=BASE_ERR)])
    rows = {t.target: t for t in targets(Study(load_results(same)))}
    assert rows[full.target].measured == "+0.0% [+0.0%, +0.0%]"
    assert rows[full.target].met == "no (provisional)"
    assert rows["AID accuracy >= 95% on test speakers (Qifusion, full context)"].met == "pending"
    empty = {t.target: t for t in targets(Study({}))}
    assert {t.met for t in empty.values()} == {"pending"}


def test_report_pending_deterministic_and_check(results: Path, tmp_path: Path) -> None:
    md1, md2 = tmp_path / "a" / "RESULTS.md", tmp_path / "b" / "RESULTS.md"
    text = generate(results, md1, md1.parent / "results", speed="## Speed\n\nfake speed")
    assert generate(results, md2, md2.parent / "results", speed="## Speed\n\nfake speed") == text
    assert md1.read_text() == text
    pngs = sorted(p.name for p in (md1.parent / "results").glob("*.png"))
    assert pngs == ["aid_confusion.png", "block_probe.png", "laf_weights.png", "learning_curves.png",
                    "streaming_cer.png"]
    for name in pngs:
        assert (md1.parent / "results" / name).read_bytes() == (md2.parent / "results" / name).read_bytes()
    assert "](results/aid_confusion.png)" in text
    pending = ("python -m benchmarks.accuracy.train_run qifusion_s1 && "
               "python -m benchmarks.accuracy.eval_run qifusion_s1")
    assert pending in text and "train_run.py baseline_s0 " not in text
    assert "4 of 24 runs have results." in text
    assert "| **baseline mean ± std** | 16.67 ± 0.00 |" in text
    assert text.count("## Speed") == 1 and "fake speed" in text
    assert "\n\n\n" not in text
    assert is_up_to_date(results, md1, md1.parent / "results", speed="## Speed\n\nfake speed")
    fake = fake_run("qifusion_s1", group="main", seed=1, errors=BASE_ERR, aid=True)
    write_runs(results, [fake])
    assert not is_up_to_date(results, md1, md1.parent / "results", speed="## Speed\n\nfake speed")


def test_bad_result_file_is_named(tmp_path: Path) -> None:
    d = tmp_path / "acc"
    d.mkdir()
    (d / "baseline_s0.json").write_text("{not json")
    with pytest.raises(DataError, match=r"baseline_s0\.json"):
        load_results(d)
    (d / "baseline_s0.json").write_text(json.dumps({"run": "baseline_s0"}))
    with pytest.raises(DataError, match="missing key"):
        load_results(d)
    bad = fake_run("baseline_s0", group="main", seed=0, errors=BASE_ERR)
    bad["sets"]["test"]["modes"]["ctc_greedy@8"]["errors"] = [1, 2]
    (d / "baseline_s0.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match=r"sets\.test\.modes\.ctc_greedy@8\.errors has 2 items"):
        load_results(d)
    del bad["sets"]["test"]["modes"]["ctc_greedy@8"]["errors"]
    (d / "baseline_s0.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="malformed sets"):
        load_results(d)


def test_aid_at_chance_is_called_out(results: Path, tmp_path: Path) -> None:
    md = tmp_path / "r" / "RESULTS.md"
    assert "at chance level" not in generate(results, md, md.parent / "results", speed="")
    stuck = fake_run("qifusion_s0", group="main", seed=0, errors=half(BASE_ERR), aid=True)
    for split in stuck["sets"].values():
        for mode in split["modes"].values():
            mode["pred_accent"] = ["en-us"] * 6  # the majority class for every utterance: 3/6 right
    write_runs(results, [stuck])
    text = generate(results, md, md.parent / "results", speed="")
    assert "| qifusion_s0 | 50.0% |" in text
    assert "The AID is at chance level (50.0%, the share of the largest test accent; it predicts 1" in text


def _aid_fit(run: str, train_corr: float) -> dict:
    split = {"n": 16, "acc_mean_posterior": 0.125, "acc_prior_corrected": train_corr,
             "distinct_predicted": 1, "distinct_predicted_prior_corrected": 3}
    return {"run": run, "per_accent": 2, "seed": 0, "train_prior": {f"a{i}": 0.125 for i in range(8)},
            "train": split, "dev": {**split, "acc_prior_corrected": 0.2},
            "fbank_stats_probe_train_to_dev": 0.215}


def test_aid_fit_table_and_underfit_verdict(results: Path, tmp_path: Path) -> None:
    md = tmp_path / "r" / "RESULTS.md"
    assert "Does the AID head fit" not in generate(results, md, md.parent / "results", speed="")
    aid_dir = results.with_name("accuracy_aid")
    aid_dir.mkdir()
    (aid_dir / "qifusion_s0.json").write_text(json.dumps(_aid_fit("qifusion_s0", 0.2)))
    (aid_dir / "aid3_s0.json").write_text(json.dumps(_aid_fit("aid3_s0", 0.9)))
    text = generate(results, md, md.parent / "results", speed="")
    assert "| qifusion_s0 | 12.5% | 20.0% | 12.5% | 20.0% | 21.5% |" in text
    assert "| aid3_s0 | 12.5% | 90.0% |" in text
    assert "Chance is 12.5% (8 accents" in text
    assert "qifusion_s0: below 50% even on training utterances" in text  # aid3_s0 fits: not named
    assert "--frozen-head" not in text
    fit = _aid_fit("qifusion_s0", 0.2)
    fit["frozen_head"] = {"n_train": 16, "n_dev": 8, "epochs": 5,
                          "encoder": {"final_train": 1.0, "final_dev": 0.25},
                          "fbank": {"final_train": 0.5, "final_dev": 0.125}}
    (aid_dir / "qifusion_s0.json").write_text(json.dumps(fit))
    text = generate(results, md, md.parent / "results", speed="")
    assert "`aid_fit.py NAME --frozen-head 2`" in text and "16 train and 8 dev utterances" in text
    assert "| qifusion_s0 | 100.0% | 25.0% | 50.0% | 12.5% |" in text
    (aid_dir / "aid3_s0.json").write_text(json.dumps({"run": "aid3_s0", "train": {}}))
    with pytest.raises(DataError, match=r"aid3_s0\.json: not an aid_fit\.py result"):
        generate(results, md, md.parent / "results", speed="")


def test_per_seed_reductions_pair_same_seeds(results: Path, tmp_path: Path) -> None:
    write_runs(results, [fake_run("qifusion_s1", group="main", seed=1, errors=BASE_ERR)])  # no gain at seed 1
    md = tmp_path / "r" / "RESULTS.md"
    text = generate(results, md, md.parent / "results", speed="")
    # seed 0: 20 -> 10 errors (+50%), seed 1: 20 -> 20 (+0%); pooled means 20 -> 15 (+25%)
    assert "| resc. full | 16.67 -> 12.50 | +25.0% [" in text
    assert text.split("| resc. full | 16.67 -> 12.50 |")[1].split("\n")[0].endswith("| +50.0%, +0.0% |")
    assert "per seed: +50.0%, +0.0%" in text  # the targets table's note


def test_not_converged_seed_is_flagged_and_dropped_pairwise(results: Path, tmp_path: Path) -> None:
    bad = [10, 20, 30, 10, 20, 10]  # 100 / 120 chars = 83.3% CER, dev included: not converged
    write_runs(results, [fake_run("baseline_s1", group="main", seed=1, errors=bad),
                         fake_run("qifusion_s1", group="main", seed=1, errors=half(BASE_ERR))])
    md = tmp_path / "r" / "RESULTS.md"
    text = generate(results, md, md.parent / "results", speed="")
    assert "**Not converged:** baseline_s1 (dev CER >= 80%" in text
    # without seed 1 only the seed-0 pair is left: 20 -> 10 errors
    dropped = ("without seed(s) 1 (both systems' runs of that seed dropped): "
               "rescoring full 16.67 -> 8.33, +50.0% [")
    assert dropped in text
    assert "per seed: +50.0%, +90.0%; without seed(s) 1 (not converged): +50.0% [" in text
    # unpaired, converged runs only: baseline_s0 (20 errors) vs both Qifusion seeds (10 each)
    assert "(not converged): +50.0% [+50.0%, +50.0%]; converged runs only (unpaired): +50.0% [" in text
    # the held-back section too
    assert "Without seed(s) 1 (not converged, see Main comparison), rescoring full: +50.0% [" in text
    ok = write_runs(tmp_path / "ok", [fake_run("baseline_s0", group="main", seed=0, errors=BASE_ERR),
                                      fake_run("qifusion_s0", group="main", seed=0, errors=half(BASE_ERR))])
    assert "Not converged" not in generate(ok, md, md.parent / "results", speed="")


def test_per_seed_text_median_from_three_seeds() -> None:
    from benchmarks.accuracy.report_main import per_seed_text

    assert per_seed_text([0.1, 0.5]) == "+10.0%, +50.0%"
    assert per_seed_text([0.1, 0.5, 0.2]) == "+10.0%, +50.0%, +20.0% (median +20.0%)"
    assert per_seed_text([]) == "—"


def test_convergence_section_counts_separates_and_names_the_hardware(results: Path, tmp_path: Path) -> None:
    bad = [10, 20, 30, 10, 20, 10]  # 83.3% CER: not converged
    gpu = fake_run("baseline_s1", group="main", seed=1, errors=bad)
    gpu["trained_on"] = "NVIDIA H200"
    write_runs(results, [gpu, fake_run("qifusion_s1", group="main", seed=1, errors=half(BASE_ERR))])
    md = tmp_path / "r" / "RESULTS.md"
    text = generate(results, md, md.parent / "results", speed="")
    sec = text.split("## Convergence at this budget")[1].split("\n## ")[0]
    assert "| baseline | 1/2 | baseline_s1 | 16.67 ± — |" in sec
    assert "| qifusion | 2/2 | — | 8.33 ± 0.00 |" in sec
    # 2/2 vs 1/2: every table with these margins is as likely as the observed one
    assert "Qifusion 2/2, baseline 1/2; two-sided Fisher exact test p = 1.00" in sec
    # converged runs only: baseline_s0 (20 errors) vs both Qifusion seeds (10 each)
    assert "rescoring full: 16.67 -> 8.33, +50.0% [" in sec
    assert "| 1 | 83.33 | 83.33 | 20.5 | GPU | 8.33 | 8.33 | 20.5 | CPU |" in sec
    assert "on a lent NVIDIA H200 GPU (`benchmarks/accuracy/gpu_train.sh`: baseline_s1)" in text
    # the ablations' scale: only Qifusion has two converged seeds
    assert "the converged seeds of the main systems span qifusion 8.33-8.33 (2 seeds) (resc. full" in text
    # CPU 3/3 vs GPU 0/1: only the observed table is as unlikely (1/4)
    assert "main runs: CPU 3/3, GPU 0/1 (Fisher p = 0.25); every run of the study: CPU 4/4, GPU 0/1" in sec


def test_fisher_exact_known_values() -> None:
    from benchmarks.accuracy.report_converge import fisher_exact

    assert fisher_exact(6, 6, 0, 6) == pytest.approx(2 / 924)  # only the two extreme tables
    assert fisher_exact(5, 6, 3, 6) == pytest.approx(0.5455, abs=1e-4)
    assert fisher_exact(3, 6, 3, 6) == pytest.approx(1.0)


def test_unseen_pair_not_converged_is_called_uninformative(results: Path, tmp_path: Path) -> None:
    bad = [10, 20, 30, 10, 20, 10]
    write_runs(results, [fake_run("unseen_baseline_s0", group="unseen", seed=0, errors=BASE_ERR),
                         fake_run("unseen_qifusion_s0", group="unseen", seed=0, errors=bad)])
    md = tmp_path / "r" / "RESULTS.md"
    text = generate(results, md, md.parent / "results", speed="")
    sec = text.split("## Unseen accent")[1].split("\n## ")[0]
    assert "**Not converged** (dev CER >= 80%): unseen_qifusion_s0. A comparison" in sec
    assert "| unseen_qifusion_s0 |" in sec and "| **no** | CPU |" in sec


def test_the_committed_report_is_up_to_date_and_reads_the_weights_its_runs_had() -> None:
    from benchmarks.accuracy.report_extra import _weights
    from benchmarks.accuracy.spec import RESULTS as COMMITTED

    assert is_up_to_date(), "docs/RESULTS.md is out of date: python -m benchmarks.accuracy.report"
    # qifusion_s0 trained with CTC weight 0.3, whatever the committed config says today
    res = json.loads((COMMITTED / "qifusion_s0.json").read_text())
    assert _weights(res) == (1.0, 0.3)
