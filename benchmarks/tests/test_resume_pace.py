"""benchmarks.speed.resume_pace: what a variant means and which checkpoint a start resumes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.speed.resume_pace import checkpoint, parse_variant


def test_parse_variant_splits_the_switches_from_the_overrides() -> None:
    assert parse_variant("amp=bf16 malloc=jemalloc data.num_workers=0") == (
        {"amp": "bf16", "malloc": "jemalloc"}, ["data.num_workers=0"])
    assert parse_variant("") == ({"amp": "none", "malloc": "system"}, [])
    with pytest.raises(ValueError, match="malloc must be one of system, jemalloc"):
        parse_variant("malloc=tcmalloc")
    with pytest.raises(ValueError, match="'amp' is not KEY=VALUE"):
        parse_variant("amp")


def test_parse_variant_takes_a_jemalloc_conf_only_with_jemalloc() -> None:
    conf = "background_thread:true,dirty_decay_ms:10000"
    assert parse_variant(f"malloc=jemalloc malloc_conf={conf}") == (
        {"amp": "none", "malloc": "jemalloc", "malloc_conf": conf}, [])
    with pytest.raises(ValueError, match="malloc_conf needs malloc=jemalloc"):
        parse_variant(f"malloc_conf={conf}")


def test_checkpoint_prefers_the_archive_and_names_what_is_missing(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "step_250.pt").write_bytes(b"")
    assert checkpoint(run, 250) == run / "step_250.pt"
    archive = tmp_path / "r.archive"
    archive.mkdir()
    (archive / "step_250.pt").write_bytes(b"")
    assert checkpoint(run, 250) == archive / "step_250.pt"
    with pytest.raises(SystemExit, match=r"no step_500\.pt in"):
        checkpoint(run, 500)
