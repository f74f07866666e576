"""benchmarks.accuracy.v2_report and the two-level bootstrap: targets from hand-made result JSONs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.accuracy import v2_report
from benchmarks.accuracy.report_stats import bootstrap_reduction

ACCENTS = ["us", "us", "french", "german"]
REF = [10, 10, 10, 10]


def result(system: str, seed: int, errors: list[int], *, converged: bool = True,
           pred: list[str | None] | None = None, run: str | None = None, group: str = "main",
           accents: list[str] = ACCENTS) -> dict:
    """A result JSON of ``benchmarks.accuracy.v2`` with 4 test utterances of 10 chars (dev = test)."""
    pred = pred if pred is not None else ([None] * 4 if system == "baseline" else list(accents))
    modes = {f"{m}@{c}": {"cer": 100 * sum(errors) / sum(REF), "wer": 50.0, "rtf": 0.1, "aid_accuracy": None,
                          "errors": errors, "word_errors": [1] * 4, "pred_accent": pred, "per_accent": {}}
             for m in (v2_report.RESC, v2_report.GREEDY, v2_report.LM) for c in ("full", "16")}
    utts = {"ids": ["a", "b", "c", "d"], "accent": accents, "ref_chars": REF, "ref_words": [2] * 4}
    run = run or v2_report.run_name(system, seed)
    return {"run": run, "group": group, "recipe": run.split("-")[0], "system": system, "seed": seed,
            "converged": converged, "dev_greedy_cer": 19.5 if converged else 35.0,
            "accents": sorted(set(accents)), "train": {"steps": 6000},
            "sets": {"test": {"utts": utts, "modes": modes}, "dev": {"utts": utts, "modes": modes}},
            "block_probe": {"blocks": [1, 2], "acc": [0.5, 0.75]},
            **({"laf": {"layers": [1, 2], "weights": [0.25, 0.75]}} if system == "qifusion" else {})}


def write(d: Path, *results: dict) -> Path:
    d.mkdir(exist_ok=True)
    for r in results:
        (d / f"{r['run']}.json").write_text(json.dumps(r))
    return d


def test_over_seeds_bootstrap_is_the_plain_one_for_one_seed_and_wider_for_spread_seeds() -> None:
    rng = np.random.default_rng(1)
    ref = rng.integers(5, 20, size=200).astype(float)
    eb = rng.integers(0, 5, size=(1, 200)).astype(float)
    eq = np.maximum(eb - 1, 0)
    assert bootstrap_reduction(eb, eq, ref, over_seeds=True) == bootstrap_reduction(eb, eq, ref)
    # two Qifusion seeds far apart: the seed draw adds their spread to the interval
    eq2 = np.stack([np.maximum(eb[0] - 2, 0), eb[0]])
    plain, both = bootstrap_reduction(eb, eq2, ref), bootstrap_reduction(eb, eq2, ref, over_seeds=True)
    assert plain.point == both.point
    assert both.hi - both.lo > 2 * (plain.hi - plain.lo)


def test_targets_pending_provisional_and_per_seed_pairs(tmp_path: Path) -> None:
    d = write(tmp_path / "res", result("baseline", 2, [2, 2, 4, 2]), result("baseline", 3, [2, 2, 4, 2]),
              result("qifusion", 2, [1, 1, 2, 1]), result("qifusion", 3, [2, 2, 2, 2]),
              result("baseline", 1, [3, 3, 3, 3]))
    text = v2_report.build(d).text()
    # seed 2: 1 - 5/10 = +50%; seed 3: 1 - 8/10 = +20%; median +35.0%
    # minority (french, german): 1 - 3/6, 1 - 4/6
    assert "median +35.0% (seeds: s2 +50.0%, s3 +20.0%)" in text
    assert "median +41.7% (seeds: s2 +50.0%, s3 +33.3%)" in text
    # the medians pass 22.1% but 4 utterances and 2 seeds leave 0 inside the interval (the draws of
    # utterances a, b, d with Qifusion's seed 3 only reduce nothing)
    assert "pooled +35.0% [+0.0%, +50.0%] | no (provisional) |" in text
    assert ("| Qifusion chunk-16 CER within 5.0% of full (resc.) | median +0.0% (s2 +0.0%, s3 +0.0%) "
            "| yes (provisional) |") in text
    assert "main: `new-baseline-s4-accents`, `new-qifusion-s4-accents`; one seed: `oracle-baseline-s2" in text
    assert "new-baseline-s1-accents (extra seed)" in text
    assert "| AID >= 95.0% on unseen test speakers, full | median 100.0% (s2 100.0%, s3 100.0%) |" in text
    assert "| qifusion-s2-accents" not in text  # names are whole


def test_a_failed_main_run_fails_every_target(tmp_path: Path) -> None:
    d = write(tmp_path / "res", *(result("baseline", s, [2, 2, 2, 2]) for s in (2, 3, 4)),
              result("qifusion", 2, [1, 1, 1, 1]), result("qifusion", 3, [1, 1, 1, 1]),
              result("qifusion", 4, [5, 5, 5, 5], converged=False))
    text = v2_report.build(d).text()
    assert "| every main run converged (dev CER <= 20%) |" in text
    assert "new-qifusion-s4-accents 35.0%" in text
    assert "| yes" not in text.split("## Targets")[1].split("## Runs")[0]
    assert "**Failed runs** (not converged; not data points): new-qifusion-s4-accents." in text
    assert "no (a main run failed)" in text
    # ... and its numbers are in no median, pooled mean or per-accent mean: seeds 2 and 3 reduce by 50%
    assert "finished: baseline 3/3, Qifusion 3/3; converged: baseline 3, Qifusion 2." in text
    assert "median +50.0% (seeds: s2 +50.0%, s3 +50.0%); pooled +50.0%" in text
    assert "s4 " not in text.split("## Targets")[1].split("## Runs")[0].split("\n", 4)[4]
    assert "| all | 20.00 | 10.00 | +50.0% |" in text


def test_check_and_bad_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture) -> None:
    d = write(tmp_path / "res", result("baseline", 2, [2, 2, 2, 2]))
    out = tmp_path / "R.md"
    monkeypatch.setattr("sys.argv", ["v2_report", "--results", str(d), "--out", str(out), "--check"])
    with pytest.raises(SystemExit) as e:
        v2_report.main()
    assert e.value.code == 1 and "out of date" in capsys.readouterr().err
    monkeypatch.setattr("sys.argv", ["v2_report", "--results", str(d), "--out", str(out)])
    v2_report.main()
    monkeypatch.setattr("sys.argv", ["v2_report", "--results", str(d), "--out", str(out), "--check"])
    v2_report.main()
    assert "is up to date" in capsys.readouterr().out
    (d / "new-qifusion-s2-accents.json").write_text("{not json")
    with pytest.raises(SystemExit) as e:
        v2_report.main()
    assert e.value.code == 2
    assert "new-qifusion-s2-accents.json: not a readable JSON result" in capsys.readouterr().err


def test_ship_row_reads_the_shipped_card(tmp_path: Path) -> None:
    d = tmp_path / "accents-en-qifusion"
    assert v2_report.ship_row(d)[2] == "pending"
    d.mkdir()
    (d / "card.json").write_text(json.dumps({"data": "data/benchmark"}))  # the first study's model
    assert v2_report.ship_row(d)[1:] == ["`models/accents-en-qifusion` is not a results-v2 model yet",
                                         "pending"]
    (d / "card.json").write_text(json.dumps({"run": "new-qifusion-s3-accents", "test_lm_wer": 16.04}))
    assert v2_report.ship_row(d)[1:] == ["new-qifusion-s3-accents: 16.0%", "no"]


def test_the_committed_page_is_generated_from_the_committed_results() -> None:
    assert v2_report.OUT_MD.read_text() == v2_report.build().text(), \
        "docs/RESULTS_v2.md is out of date: python -m benchmarks.accuracy.v2_report"


def test_one_seed_sections_read_against_the_main_run_of_their_seed(tmp_path: Path) -> None:
    with_scot = ["us", "scottish", "french", "german"]
    d = write(tmp_path / "res", result("baseline", 2, [2, 2, 2, 2]), result("qifusion", 2, [1, 1, 2, 1]),
              result("qifusion", 2, [2, 2, 2, 2], run="nofusion-qifusion-s2-accents", group="ablation"),
              result("qifusion", 2, [1, 1, 1, 1], run="aid3-qifusion-s2-accents", group="sweep"),
              result("baseline", 2, [2, 4, 2, 2], run="new-baseline-s2-accents8", group="unseen",
                     accents=with_scot),
              result("qifusion", 2, [2, 1, 2, 2], run="new-qifusion-s2-accents8", group="unseen",
                     accents=with_scot, pred=["us", "british", "french", "german"]))
    text = v2_report.build(d).text()
    # the ablation makes 8 errors where the main Qifusion seed 2 makes 5: 1 - 8/5
    ablations = text.split("## Ablations")[1].split("## ")[0]
    row = next(line for line in ablations.splitlines() if line.startswith("| nofusion-qifusion-s2-accents |"))
    assert "| 20.00 | -60.0% [" in row
    assert "| w_aid | 3 | aid3-qifusion-s2-accents | 10.00 | 10.00 | 100.0% |" in text
    assert "| w_aid | 1 (committed) | new-qifusion-s2-accents | 12.50 |" in text
    # unseen accent: scottish 4 -> 1 errors (+75%); the 8 seen ones 6 -> 6
    assert "| scottish (unseen) | 40.00 | 10.00 | +75.0% [" in text
    assert "| the 8 seen accents | 20.00 | 20.00 | +0.0% [" in text
    assert "as: british 100.0%." in text
    # the scaling table: all 9 accents is the main pair of seed 2; the subsets are pending
    assert "| 4 | us, british, german, french | — | — | — |" in text
    assert "hungarian, scottish | 20.00 | 12.50 | +37.5% [" in text
    assert "`oracle-baseline-s2-accents`" in text and "`new-qifusion-s2-accents4`" in text
    assert "`nofusion-qifusion-s2-accents`" not in text  # done
    # the main table lists main runs only
    assert "| nofusion-qifusion-s2-accents (extra seed)" not in text


def test_superseded_main_runs_are_records_with_their_test_numbers_not_data_points(tmp_path: Path) -> None:
    """A main run of an earlier recipe (``superseded/``) is listed with why, and its test numbers are shown
    in a table of their own; the targets and the runs table do not count it."""
    d = write(tmp_path / "res", result("baseline", 2, [2, 2, 2, 2]))
    old = {**result("qifusion", 2, [1, 1, 1, 1], run="fp-qifusion-s2-accents"), "final_step": 6907,
           "superseded": "float32 steps"}
    write(d / "superseded", old)
    text = v2_report.build(d).text()
    assert "`fp-qifusion-s2-accents` converged (dev CER 19.5%, 6907 steps): float32 steps." in text
    runs_table = text.split("## Runs")[1]
    assert "| fp-qifusion-s2-accents | 6907 | 19.5 | 10.00 | 10.00 |" in text.split("## Runs")[0]
    assert "fp-qifusion-s2-accents" not in runs_table
    assert "finished: baseline 1/3, Qifusion 0/3" in text
