"""benchmarks.aid_sources: the AID head's accuracy by seen / unseen source voice (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.aid_sources import head_by_source, speaker_of

SPEAKERS = {"de_mb-de1_w0.92": {"unseen_source": False}, "de_mb-de7_w0.92": {"unseen_source": True},
            "us_slt_w1.08": {"unseen_source": False}}


def _results(path: Path, rows: list[tuple[str, str, str | None]]) -> Path:
    lines = [json.dumps({"utt_id": u, "accent": a, "pred_accent": p}) + "\n" for u, a, p in rows]
    path.write_text("".join(lines))
    return path


def test_accuracy_by_source_voice(tmp_path: Path) -> None:
    res = _results(tmp_path / "results.jsonl", [
        ("de_mb-de1_w0.92-000001", "german", "german"),
        ("de_mb-de1_w0.92-000002", "german", "german"),
        ("us_slt_w1.08-000003", "us", "french"),
        ("de_mb-de7_w0.92-000004", "german", "french"),
        ("de_mb-de7_w0.92-000005", "german", None),  # no prediction: wrong
        ("de_mb-de7_w0.92-000006", "german", "german"),
    ])
    out = head_by_source(res, SPEAKERS)
    assert out["seen_source"] == {"utterances": 3, "accuracy": round(2 / 3, 4)}
    assert out["unseen_source"] == {"utterances": 3, "accuracy": round(1 / 3, 4)}
    assert out["per_speaker"]["de_mb-de7_w0.92"]["predicted"] == {"french": 1, "None": 1, "german": 1}
    assert out["per_speaker"]["us_slt_w1.08"] == {"accent": "us", "unseen_source": False,
                                                   "predicted": {"french": 1}}


def test_unknown_speaker_is_named(tmp_path: Path) -> None:
    res = _results(tmp_path / "results.jsonl", [("nobody_x-000001", "us", "us")])
    with pytest.raises(KeyError, match="'nobody_x' of nobody_x-000001"):
        head_by_source(res, SPEAKERS)
    assert speaker_of("a-b_c-000123") == "a-b_c"


def test_report_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import recipe_report

    monkeypatch.setattr(recipe_report, "RESULTS", tmp_path / "results" / "recipe")
    assert recipe_report.render_aid_sources() == []  # nothing measured: no section
    res = _results(tmp_path / "results.jsonl", [("de_mb-de1_w0.92-000001", "german", "german"),
                                                 ("de_mb-de7_w0.92-000002", "german", "french")])
    feats = {"block2_std": {"all": 0.8, "seen_source": 1.0, "unseen_source": 0.55},
             "block6_mean": {"all": 0.7, "seen_source": 1.0, "unseen_source": 0.40},
             "fbank_meanstd": {"all": 0.6, "seen_source": 0.97, "unseen_source": 0.08}}
    out = tmp_path / "results" / "aid_sources" / "run1.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps({"run": "run1", "head": head_by_source(res, SPEAKERS),
                               "probe": {"features": feats}}))
    lines = recipe_report.render_aid_sources()
    assert "| run1 | 100.0% | 0.0% | block2_std | 55.0% | 8.0% |" in lines
    assert "- de_mb-de7_w0.92: french 1" in lines
