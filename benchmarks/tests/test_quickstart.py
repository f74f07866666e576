from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import quickstart


def test_missing_corpus_names_the_split_and_the_command(tmp_path: Path) -> None:
    (tmp_path / "demo" / "train").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"demo/dev is missing: run qifusion synth --out .*demo --preset"):
        quickstart.main(["--data", str(tmp_path / "demo"), "--out", str(tmp_path / "q.json")])
    assert not (tmp_path / "q.json").exists()


def test_result_counts_training_minutes_and_both_splits(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    import qifusion.decode.run

    def fake_train(cmd, cwd):
        exp = Path(cmd[cmd.index("--exp") + 1])
        (exp / "final").mkdir(parents=True)
        (exp / "final" / "card.json").write_text(json.dumps({"steps": 40, "num_params": 5}))
        (exp / "train_log.jsonl").write_text(json.dumps({"kind": "dev", "train_minutes": 2.9}) + "\n")
        return 0

    calls = []

    def fake_decode(*, model_dir, data_dir, out_dir, mode, chunk_size, progress):
        calls.append((data_dir.name, mode, chunk_size))
        return {"cer": 55.0 if data_dir.name == "test" else 61.0, "wer": 90.0, "aid_accuracy": 0.3}

    monkeypatch.setattr(subprocess, "call", fake_train)
    monkeypatch.setattr(qifusion.decode.run, "decode_dir", fake_decode)
    exp = tmp_path / "exp"
    (exp / "old").mkdir(parents=True)  # a previous run's files are removed: always from scratch
    res = quickstart.run(tmp_path / "demo", exp)
    assert not (exp / "old").exists()
    assert calls == [("dev", "attention_rescoring", 16), ("dev", "ctc_greedy", -1),
                     ("test", "attention_rescoring", 16), ("test", "ctc_greedy", -1)]
    assert res["train_minutes"] == 2.9 and res["steps"] == 40 and res["met"] is True
    assert res["decodes"]["dev/attention_rescoring_chunk16"]["cer"] == 61.0


def test_target_allows_one_step_past_the_budget() -> None:
    assert quickstart.met(43.5, 3.01) and not quickstart.met(43.5, 3.2) and not quickstart.met(60.0, 2.0)
