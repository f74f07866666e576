"""The whole accuracy study, resumable: ``python benchmarks/accuracy/run_study.py [--jobs 2] [NAME ...]``.

Runs are taken in the order of ``spec.RUNS`` (headline runs first); ``--jobs`` runs train side by side,
one intra-op thread each (on a 2-core machine two 1-thread runs beat one 2-thread run). Each worker
trains its run (continuing from the newest checkpoint) and then evaluates it; finished and evaluated runs
are skipped, so the command can be killed and rerun at any time. At the end ``report.py`` regenerates
docs/RESULTS.md from every result JSON present.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spec import BY_NAME, EXP, RESULTS, ROOT, RUNS

HERE = Path(__file__).resolve().parent


def done(name: str) -> bool:
    return (RESULTS / f"{name}.json").exists()


def work(name: str, threads: int) -> int:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    log = EXP / f"{name}.out"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        for script in ("train_run.py", "eval_run.py"):
            rc = subprocess.call([sys.executable, str(HERE / script), name], cwd=ROOT, env=env, stdout=f,
                                 stderr=subprocess.STDOUT)
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
    args = ap.parse_args()
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown run(s) {', '.join(unknown)}; valid: {', '.join(BY_NAME)}")
    names = [r.name for r in RUNS if (not args.names or r.name in args.names) and not done(r.name)]
    print(f"pending: {', '.join(names) or 'none'}", flush=True)
    threads = 1 if args.jobs > 1 else (os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rcs = list(pool.map(lambda n: work(n, threads), names))
    if not args.no_report:
        subprocess.call([sys.executable, str(HERE / "report.py")], cwd=ROOT)
    sys.exit(max(rcs, default=0))


if __name__ == "__main__":
    main()
