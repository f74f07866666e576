"""Helpers shared by the speed scripts: fresh worker subprocesses per thread count, machine facts,
peak memory, balanced test subsets and medians.

A measurement at N threads runs in its own ``python SCRIPT --worker SPEC`` subprocess whose environment
sets ``OMP_NUM_THREADS=N`` (also MKL) and ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported; the worker
also calls ``torch.set_num_threads(N)`` (onnxruntime sessions of ``qifusion.export.onnx_backend`` read
their intra-op thread count from ``OMP_NUM_THREADS``). The worker prints one JSON line (its last stdout
line) which includes its own peak RSS (``resource.getrusage``).

Only the standard library is imported at module level, so the parent process stays light.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def command_line() -> str:
    """The command that is running, as a pasteable shell line (``python -m module`` + arguments)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None else ["python", sys.argv[0]]
    return shlex.join([*head, *sys.argv[1:]])


def median_time(fn: Any, repeats: int, *, warmup: int = 1) -> tuple[float, Any]:
    """Median wall seconds of ``repeats`` calls of ``fn()`` after ``warmup`` untimed calls, and the last
    call's result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return median(times), out


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024 if sys.platform != "darwin" else kb / 2**20, 1)


def median(xs: list[float]) -> float:
    """Median of a non-empty list (ValueError naming the problem otherwise)."""
    if not xs:
        raise ValueError("median of no measurements")
    return float(statistics.median(xs))


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``), e.g. ``AMD EPYC``; None when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info() -> dict[str, Any]:
    """CPU count and model, load average at start (a busy machine slows every number), library versions."""
    import torch

    try:
        import onnxruntime

        ort_version: str | None = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a worker that must run with ``threads`` intra-op threads."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "OMP_WAIT_POLICY": "PASSIVE"})
    return env


def run_worker(module: str, spec: dict[str, Any], *, threads: int,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m module --worker JSON(spec)`` in a fresh process at ``threads`` threads (from the
    repository root), with ``env`` added to its environment; returns the JSON object of its last stdout
    line. Its stderr goes to ours (progress, warnings). Exits with a message naming the worker when it
    fails."""
    cmd = [sys.executable, "-m", module, "--worker", json.dumps({**spec, "threads": threads})]
    proc = subprocess.run(cmd, env={**thread_env(threads), **(env or {})}, stdout=subprocess.PIPE, text=True,
                          check=False, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        sys.exit(f"worker failed (exit {proc.returncode}): {shlex.join(cmd)}")
    return json.loads(lines[-1])


def balanced_subset(utts: list[Any], num: int) -> list[Any]:
    """``num`` utterances (all if ``num <= 0``) taken round-robin over accents (sorted names; utterances
    in file order), so every accent is represented; deterministic."""
    if num <= 0 or num >= len(utts):
        return list(utts)
    per: dict[str, list[Any]] = defaultdict(list)
    for u in utts:
        per[str(u.accent)].append(u)
    queues = [per[a] for a in sorted(per)]
    out: list[Any] = []
    i = 0
    while len(out) < num:
        for q in queues:
            if i < len(q) and len(out) < num:
                out.append(q[i])
        i += 1
    return out


def write_subset(data_dir: Path, out_dir: Path, num: int) -> tuple[int, float]:
    """Write a balanced ``num``-utterance Kaldi dir of ``data_dir`` to ``out_dir``; returns (utterances,
    seconds of audio, from the manifest's durations when known, else 0)."""
    from qifusion.data.manifest import load_data_dir, write_kaldi_dir

    utts = balanced_subset(load_data_dir(Path(data_dir), require_text=True), num)
    write_kaldi_dir(utts, out_dir)
    return len(utts), round(sum(u.duration or 0.0 for u in utts), 2)


def main() -> None:
    """``python -m benchmarks.speed.speed_common subset --data D --num N --out DIR``."""
    import argparse

    ap = argparse.ArgumentParser(description="write a balanced test subset (N utterances over accents)")
    ap.add_argument("what", choices=["subset"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--num", type=int, default=80)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    n, secs = write_subset(Path(a.data), Path(a.out), a.num)
    print(f"{a.out}: {n} utterances, {secs} s of audio", file=sys.stderr)


if __name__ == "__main__":
    main()
