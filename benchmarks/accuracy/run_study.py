"""The whole accuracy study, resumable: ``python -m benchmarks.accuracy.run_study [--jobs 2] [NAME ...]``.

Runs are taken in the order given (default: ``spec.RUNS``, headline runs first); ``--jobs`` runs train side
by side, one intra-op thread each (on a 2-core machine two 1-thread runs beat one 2-thread run). Each worker
trains its run (continuing from the newest checkpoint) and then evaluates it; finished and evaluated runs
are skipped, so the command can be killed and rerun at any time. At the end ``report.py`` regenerates
docs/RESULTS.md from every result JSON present. On a lent GPU, ``gpu_train.sh`` calls it with
``--device cuda --train-only``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from benchmarks.accuracy.spec import BY_NAME, EXP, RESULTS, ROOT, RUNS


def done(name: str) -> bool:
    return (RESULTS / f"{name}.json").exists()


def work(name: str, threads: int, *, train_args: list[str], evaluate: bool) -> int:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    log = EXP / f"{name}.out"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        for script in ("train_run", "eval_run")[: 2 if evaluate else 1]:
            extra = train_args if script == "train_run" else []
            cmd = [sys.executable, "-m", f"benchmarks.accuracy.{script}", name, *extra]
            rc = subprocess.call(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
            if rc:
                print(f"{name}: {script} failed (rc {rc}), see {log}", flush=True)
                return rc
    print(f"{name}: done", flush=True)
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="*", help="default: every run")
    ap.add_argument("--jobs", type=int, default=2, help="runs side by side (1 thread each)")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the runs train")
    ap.add_argument("--num-workers", type=int, default=0, help="data loader processes per run")
    ap.add_argument("--train-only", action="store_true", help="train, do not evaluate (e.g. on a lent GPU)")
    args = ap.parse_args()
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown run(s) {', '.join(unknown)}; valid: {', '.join(BY_NAME)}")
    names = [n for n in (args.names or [r.name for r in RUNS]) if not done(n)]
    print(f"pending: {', '.join(names) or 'none'}", flush=True)
    threads = 1 if args.jobs > 1 else (os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        train_args = ["--device", args.device, "--num-workers", str(args.num_workers)]
        rcs = list(pool.map(lambda n: work(n, threads, train_args=train_args, evaluate=not args.train_only),
                            names))
    if not args.no_report and not args.train_only:
        subprocess.call([sys.executable, "-m", "benchmarks.accuracy.report"], cwd=ROOT)
    sys.exit(max(rcs, default=0))


if __name__ == "__main__":
    main()
