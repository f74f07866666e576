"""What a recipe run's experiment folder says about it (:mod:`benchmarks.recipe`): how each start trained
(threads, CPU, OpenMP waits, heap allocator, precision) and what it logged (dev curve, feature-cache minutes).

Each reader takes the run's folder ``exp/recipe/RUN`` and reads only files the trainer or
:func:`benchmarks.recipe.train` wrote there; a run trained before a file existed gets the value that held
then (documented per function).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qifusion import omp


def run_threads(exp: Path) -> list[int]:
    """Thread counts of a run's starts (``[1]`` for runs made before ``--threads`` existed)."""
    path = exp / "threads.json"
    return json.loads(path.read_text()) if path.exists() else ([1] if exp.exists() else [])


def run_cpus(exp: Path) -> list[str | None]:
    """The CPU model of each start of a run (``cpus.json``; the pace of an hour depends on it)."""
    path = exp / "cpus.json"
    return json.loads(path.read_text()) if path.exists() else []


def run_paces(exp: Path) -> list[float | None]:
    """The host's pace before each start of a run (``pace.json``, :func:`benchmarks.recipe.host_pace`:
    seconds per small-encoder train step; None where it could not be measured); empty for runs trained
    before 2026-12-07 17:00 UTC."""
    path = exp / "pace.json"
    return json.loads(path.read_text()) if path.exists() else []


def run_waits(exp: Path) -> list[str]:
    """How each start's OpenMP threads waited (``waits.json``); a run trained before ``waits.json`` existed
    (until 2026-12-07: the ``pw`` runs and every run before them) had passive waits without a spin (slower
    steps: docs/train.md "Threads")."""
    path = exp / "waits.json"
    if path.exists():
        return json.loads(path.read_text())
    return [omp.describe({"OMP_WAIT_POLICY": "PASSIVE"})] if (exp / "train_log.jsonl").exists() else []


def run_heaps(exp: Path) -> list[str]:
    """The heap allocator of each start of a run, as ``train.log`` names it (``heap allocator: ...``,
    :func:`qifusion.malloc.describe`); a start logged before the name existed (every run until 2026-12-07
    23:00 UTC) ran with the system's malloc."""
    path = exp / "train.log"
    if not path.exists():
        return []
    starts = [line for line in path.read_text().splitlines() if " INFO model: " in line]
    return [line.split("heap allocator: ", 1)[1].removesuffix(")") if "heap allocator: " in line else "system"
            for line in starts]


def run_precisions(exp: Path) -> list[str]:
    """The training precision of each start of a run that logged it (``training precision: float32`` or
    ``bf16 autocast``, :class:`qifusion.train.loop.Trainer`; ``train.amp: bf16`` trains in float32 where the
    device has no native bf16); empty for runs trained before 2026-12-08 02:00 UTC."""
    path = exp / "train.log"
    if not path.exists():
        return []
    mark = " INFO training precision: "
    return [line.split(mark, 1)[1] for line in path.read_text().splitlines() if mark in line]


def log_records(exp: Path) -> list[dict[str, Any]]:
    """The records of a run's ``train_log.jsonl``."""
    return [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]


def curve(exp: Path, records: list[dict[str, Any]] | None = None) -> list[dict[str, float]]:
    """Dev points of a run's ``train_log.jsonl`` (or its ``records``): step, train_minutes, dev_cer,
    dev_aid_acc. The end-of-budget dev record of logs written before it carried a step gets the last
    step logged before it."""
    points = []
    step = 0
    for rec in log_records(exp) if records is None else records:
        step = rec.get("step", step)
        if "dev_cer" in rec and "train_minutes" in rec:
            keys = ("train_minutes", "dev_cer", "dev_aid_acc")
            points.append({"step": step, **{k: rec[k] for k in keys if k in rec}})
    return sorted({p["step"]: p for p in points}.values(), key=lambda p: p["step"])


def feature_minutes(records: list[dict[str, Any]]) -> float | None:
    """Minutes a run spent filling its feature cache before training (the ``kind: features`` records of
    its :func:`log_records`, from ``data.feature_cache_prefill``, summed over its starts; outside
    ``train_minutes``), None if it did not."""
    recs = [r for r in records if r.get("kind") == "features"]
    return round(sum(r["minutes"] for r in recs), 2) if recs else None
