"""benchmarks.accents_subsets: train/dev keep the subset's accents, test keeps them all; bad input named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import accents_subsets, recipe
from qifusion.data.manifest import load_data_dir
from qifusion.errors import DataError


def test_subset_keeps_its_accents_in_train_and_dev_and_all_in_test(synth_corpus: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(accents_subsets.SUBSETS, "two", ("en-us", "en-029"))
    dst = accents_subsets.make("two", src=synth_corpus, dst=tmp_path / "two")
    for split, want in (("train", {"en-us", "en-029"}), ("dev", {"en-us", "en-029"}),
                        ("test", {"en-us", "en-029", "en-gb-scotland"})):
        kept = load_data_dir(dst / split)
        assert {u.accent for u in kept} == want, split
        full = [u for u in load_data_dir(synth_corpus / split) if u.accent in want]
        assert sorted(u.utt_id for u in kept) == sorted(u.utt_id for u in full), split
    assert json.loads((dst / "subset.json").read_text())["accents"] == ["en-us", "en-029"]
    # made once: a second call leaves it as it is
    (dst / "train" / "text").write_text("changed\n")
    accents_subsets.make("two", src=synth_corpus, dst=dst)
    assert (dst / "train" / "text").read_text() == "changed\n"


def test_a_subset_of_accents_the_corpus_lacks_is_named(synth_corpus: Path, tmp_path: Path) -> None:
    want = r"train: no utterances of accent\(s\) british, french, german, us for subset accents4"
    with pytest.raises(DataError, match=want):
        accents_subsets.make("accents4", src=synth_corpus, dst=tmp_path / "a4")
    assert not (tmp_path / "a4" / "subset.json").exists()


def test_study_variants_and_subsets_are_recipe_runs() -> None:
    assert recipe.parse("oracle-baseline-s2-accents") == ("oracle", "baseline", 2)
    assert "model.accent.oracle_accent=true" in recipe.overrides("oracle-baseline-s2-accents")
    assert recipe.corpus("new-qifusion-s2-accents8") == recipe.ROOT / "data" / "accents8"
    assert accents_subsets.UNSEEN not in accents_subsets.SUBSETS["accents8"]
    assert set(accents_subsets.SUBSETS["accents4"]) < set(accents_subsets.SUBSETS["accents6"])
