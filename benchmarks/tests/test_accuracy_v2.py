"""benchmarks.accuracy.v2: a finished main run decoded on test and dev, per utterance (tiny model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks import recipe
from benchmarks.accuracy import v2

NAME = "new-qifusion-s0-accents"


@pytest.fixture
def finished(tiny_model_dir: Path, synth_corpus: Path, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recipe run as ``benchmarks.recipe run`` leaves it: exp dir with the final model and training log,
    and its dev result JSON; the tiny corpus stands in for ``accents``."""
    exp = tmp_path / "exp"
    shutil.copytree(tiny_model_dir, exp / NAME / "final")
    shutil.copy(tiny_model_dir.parent / "train_log.jsonl", exp / NAME / "train_log.jsonl")
    results = tmp_path / "recipe_results"
    results.mkdir()
    dev = {"converged": False, "dev": {"ctc_greedy": {"cer": 71.5}}, "final_averages": ["epoch_40.pt"]}
    (results / f"{NAME}.json").write_text(json.dumps(dev))
    monkeypatch.setattr(recipe, "EXP", exp)
    monkeypatch.setattr(recipe, "RESULTS", results)
    monkeypatch.setattr(recipe, "CORPORA", {**recipe.CORPORA, "accents": synth_corpus})
    monkeypatch.setattr(v2, "RESULTS", tmp_path / "v2")
    return exp / NAME


def test_study_run_names() -> None:
    assert v2.study_run("new-baseline-s3-accents") == ("main", "baseline", 3)
    assert v2.study_run("oracle-baseline-s2-accents") == ("ablation", "baseline", 2)
    assert v2.study_run("aid03-qifusion-s2-accents") == ("sweep", "qifusion", 2)
    assert v2.study_run("new-qifusion-s2-accents8") == ("unseen", "qifusion", 2)
    assert v2.study_run("new-baseline-s2-accents4") == ("scaling", "baseline", 2)
    # a recipe run that is not part of the study, a variant on the wrong system, a name that is no run
    for bad in ("lr2-qifusion-s0-accents", "new-qifusion-s0", "oracle-qifusion-s2-accents",
                "nofusion-qifusion-s2-accents4"):
        with pytest.raises(SystemExit, match=f"{bad}: a results-v2 run is new-SYSTEM-sSEED-accents"):
            v2.study_run(bad)
    with pytest.raises(SystemExit, match="run name 'qifusion-s2' is not RECIPE-SYSTEM-sSEED"):
        v2.study_run("qifusion-s2")


def test_unfinished_run_is_named(finished: Path) -> None:
    (recipe.RESULTS / f"{NAME}.json").unlink()
    with pytest.raises(SystemExit, match=f"{NAME}: not trained and evaluated on dev here"):
        v2.evaluate(NAME)
    assert not (v2.RESULTS / f"{NAME}.json").exists()


def test_test_and_dev_decodes_per_utterance(finished: Path, synth_corpus: Path) -> None:
    out = v2.evaluate(NAME)
    res = json.loads(out.read_text())
    assert (res["group"], res["system"], res["seed"], res["converged"]) == ("main", "qifusion", 0, False)
    assert res["dev_greedy_cer"] == 71.5
    assert res["final_step"] == json.loads((finished / "final" / "card.json").read_text())["steps"] > 0
    test = res["sets"]["test"]
    ids = [line.split()[0] for line in (synth_corpus / "test" / "text").read_text().splitlines()]
    assert test["utts"]["ids"] == sorted(ids)
    assert set(test["modes"]) == ({f"{m}@{c}" for m in v2.TEST_MODES for c in ("full", "16")}
                                  | {"attention_rescoring@8", "attention_rescoring@4"})
    assert set(res["sets"]["dev"]["modes"]) == {"attention_rescoring@full", "attention_rescoring@16"}
    for key, m in test["modes"].items():
        assert len(m["errors"]) == len(m["word_errors"]) == len(m["pred_accent"]) == len(ids), key
        # the stored per-utterance counts give back the decode's own corpus CER: the report can bootstrap them
        utts = test["utts"]
        assert 100 * sum(m["errors"]) / sum(utts["ref_chars"]) == pytest.approx(m["cer"], abs=0.01)
        assert 100 * sum(m["word_errors"]) / sum(utts["ref_words"]) == pytest.approx(m["wer"], abs=0.01)
    assert (finished / "final" / "lm" / "lm.json").is_file()  # lm_rescoring used the run's own LM
    assert len(res["laf"]["weights"]) == len(res["laf"]["layers"]) == 3
    assert res["block_probe"]["blocks"] == [1, 2, 3, 4] and res["block_probe"]["n_test"] == len(ids)
    # kept unless forced
    before = out.stat().st_mtime_ns
    assert v2.evaluate(NAME) == out and out.stat().st_mtime_ns == before


def test_weights_hash_follows_the_weights_not_the_file(tiny_model_dir: Path) -> None:
    from qifusion.modeldir import load_model_dir

    a, b = load_model_dir(tiny_model_dir).model, load_model_dir(tiny_model_dir).model
    assert v2.weights_sha256(a) == v2.weights_sha256(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-6
    assert v2.weights_sha256(a) != v2.weights_sha256(b)


def test_a_run_trained_again_to_its_step_has_the_same_weights(synth_corpus: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The time-budgeted run, re-trained by steps in another exp dir (what ``reproduce`` does when a
    session has lost ``exp/``), gives bitwise the same final weights (tiny config, a few steps)."""
    from qifusion.modeldir import load_model_dir

    monkeypatch.setattr(recipe, "EXP", tmp_path / "exp")
    monkeypatch.setattr(recipe, "CORPORA", {**recipe.CORPORA, "accents": synth_corpus})
    monkeypatch.setattr(recipe, "CONFIGS", {**recipe.CONFIGS, "qifusion": "conf/tiny.yaml"})
    monkeypatch.setattr(v2, "RESULTS", tmp_path / "v2")
    monkeypatch.setattr(v2, "REPRODUCED", tmp_path / "again")
    monkeypatch.setattr(recipe, "MINUTES", 2 / 60)  # the "original" stops after 2 s of training
    monkeypatch.setattr(recipe, "host_pace", lambda threads, env: None)  # ~15 s of benchmark per start
    assert recipe.train(NAME, threads=1) == 0
    final = recipe.EXP / NAME / "final"
    steps = json.loads((final / "card.json").read_text())["steps"]
    result = {"final_step": steps, "weights_sha256": v2.weights_sha256(load_model_dir(final).model)}
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / f"{NAME}.json").write_text(json.dumps(result))
    again = v2.reproduce(NAME, threads=1)
    assert again == tmp_path / "again" / NAME / "final"
    assert json.loads((again / "card.json").read_text())["steps"] == steps
    assert steps > 1
    # a recorded hash the re-training does not give is an error naming both
    (tmp_path / "v2" / f"{NAME}.json").write_text(json.dumps({**result, "weights_sha256": "0" * 64}))
    shutil.rmtree(tmp_path / "again")
    with pytest.raises(SystemExit, match=f"{NAME}: the re-trained weights differ from the run's"):
        v2.reproduce(NAME, threads=1)
