"""benchmarks.average_window: the archive of a run's checkpoints and the replay of the trainer's pruning and
averaging rules on it (dummy checkpoint files: no model is loaded here)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import average_window as aw
from qifusion.train.checkpoint import prune_checkpoints


def _write(exp: Path, entries: list[dict]) -> None:
    exp.mkdir(parents=True, exist_ok=True)
    for e in entries:
        (exp / e["file"]).write_bytes(e["file"].encode())
    old = json.loads((exp / aw.INDEX).read_text()) if (exp / aw.INDEX).exists() else []
    (exp / aw.INDEX).write_text(json.dumps([*old, *entries]))


def test_the_archive_keeps_what_the_run_prunes(tmp_path: Path) -> None:
    exp, archive = tmp_path / "run", tmp_path / "run.archive"
    _write(exp, [{"file": "step_250.pt", "epoch": 1, "step": 250},
                 {"file": "epoch_1.pt", "epoch": 1, "step": 460},
                 {"file": "step_500.pt", "epoch": 2, "step": 500}])
    assert aw.link_new(exp, archive) == ["epoch_1.pt", "step_250.pt", "step_500.pt"]
    prune_checkpoints(exp, keep=1)  # the trainer's pruning unlinks step_250 from the run
    assert not (exp / "step_250.pt").exists()
    assert (archive / "step_250.pt").read_bytes() == b"step_250.pt"
    _write(exp, [{"file": "step_750.pt", "epoch": 2, "step": 750}])
    assert aw.link_new(exp, archive) == ["step_750.pt"]
    assert aw.link_new(exp, archive) == []
    (exp / "step_750.pt").unlink()  # written again after a resume: the archive follows the new file
    (exp / "step_750.pt").write_bytes(b"again")
    assert aw.link_new(exp, archive) == ["step_750.pt"]
    assert (archive / "step_750.pt").read_bytes() == b"again"
    assert sorted(p.name for p in archive.iterdir()) == [
        "checkpoints.json", "epoch_1.pt", "step_250.pt", "step_500.pt", "step_750.pt"]
    index = {e["file"]: e["step"] for e in json.loads((archive / aw.INDEX).read_text())}
    assert index == {"step_250.pt": 250, "epoch_1.pt": 460, "step_500.pt": 500, "step_750.pt": 750}


def _wait_for(path: Path) -> bool:
    import time

    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return path.exists()


def test_keeping_archives_while_a_run_trains_and_once_at_its_end(tmp_path: Path) -> None:
    exp = tmp_path / "run"
    archive = aw.archive_of(exp)
    assert archive == tmp_path / "run.archive"
    with aw.keeping(exp, archive, every=0.01):
        _write(exp, [{"file": "step_250.pt", "epoch": 1, "step": 250}])
        _write(exp, [{"file": "step_500.pt", "epoch": 2, "step": 500}])
        assert _wait_for(archive / "step_250.pt") and _wait_for(archive / "step_500.pt")  # while it runs
        prune_checkpoints(exp, keep=1)
        _write(exp, [{"file": "step_750.pt", "epoch": 2, "step": 750}])  # written just before the run ends
    assert not (exp / "step_250.pt").exists()
    assert sorted(p.name for p in archive.glob("*.pt")) == ["step_250.pt", "step_500.pt", "step_750.pt"]


def test_a_rule_is_replayed_with_the_trainers_pruning_and_choice(tmp_path: Path) -> None:
    archive = tmp_path / "run.archive"
    steps = [{"file": f"step_{s}.pt", "epoch": s // 460 + 1, "step": s} for s in range(250, 2001, 250)]
    epochs = [{"file": f"epoch_{e}.pt", "epoch": e, "step": 460 * e} for e in range(1, 5)]
    _write(archive, [*steps, *epochs])
    scratch = tmp_path / "scratch"
    # the committed rule: 2 step + 2 epoch checkpoints kept, the newest 4 averaged
    assert aw.kept_files(archive, scratch, keep_n=2, average=4) == [
        "epoch_3.pt", "step_1750.pt", "epoch_4.pt", "step_2000.pt"]
    assert sorted(p.name for p in scratch.glob("*.pt")) == [
        "epoch_3.pt", "epoch_4.pt", "step_1750.pt", "step_2000.pt"]
    # keeping every checkpoint: the newest 3 of all of them
    assert aw.kept_files(archive, scratch, keep_n=0, average=3) == [
        "step_1750.pt", "epoch_4.pt", "step_2000.pt"]
    assert aw.kept_files(archive, scratch, keep_n=3, average=6) == [
        "epoch_2.pt", "epoch_3.pt", "step_1500.pt", "step_1750.pt", "epoch_4.pt", "step_2000.pt"]
    # the replay works on links: the archive keeps every file
    assert len(list(archive.glob("*.pt"))) == len(steps) + len(epochs)


def test_the_recipe_page_tables_each_rule_per_run(tmp_path: Path, monkeypatch) -> None:
    from benchmarks import recipe_report

    monkeypatch.setattr(recipe_report, "AVERAGE_RESULTS", tmp_path / "average")
    assert recipe_report.render_average_windows() == []
    (tmp_path / "average").mkdir()
    rules = [{"keep_checkpoints": 2, "average_last": 1, "steps": [6907, 6907], "dev_cer": 21.894},
             {"keep_checkpoints": 2, "average_last": 4, "steps": [6005, 6907], "dev_cer": 20.081}]
    (tmp_path / "average" / "new-baseline-s2-accents.json").write_text(
        json.dumps({"run": "new-baseline-s2-accents", "rules": rules}))
    (tmp_path / "average" / "new-qifusion-s3-accents.json").write_text(  # a run replayed under one rule only
        json.dumps({"run": "new-qifusion-s3-accents", "rules": [{**rules[1], "dev_cer": 19.5}]}))
    lines = recipe_report.render_average_windows()
    assert "| keep_checkpoints | average_last | new-baseline-s2-accents | new-qifusion-s3-accents |" in lines
    assert "| 2 | 1 | 21.89 (6907-6907) | - |" in lines
    assert "| 2 | 4 | 20.08 (6005-6907) | 19.50 (6005-6907) |" in lines
