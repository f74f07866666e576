"""Train one run of the accuracy study (resumable): ``python -m benchmarks.accuracy.train_run NAME``.

Reruns continue from the newest checkpoint; a finished run (``max_steps`` reached) returns at once.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.accuracy.spec import BY_NAME, CORPUS, EXP, MAX_STEPS, ROOT, Run, trained_on
from qifusion.data.manifest import load_data_dir, write_kaldi_dir


def data_dir(run: Run) -> Path:
    """The run's data dir (train/ and dev/); a filtered copy of the lists when an accent is held out."""
    src = ROOT / CORPUS
    if run.without_accent is None:
        return src
    dst = ROOT / "data" / f"benchmark_without_{run.without_accent}"
    if (dst / "done").exists():
        return dst
    for split in ("train", "dev"):
        utts = load_data_dir(src / split)
        write_kaldi_dir([u for u in utts if u.accent != run.without_accent], dst / split)
    (dst / "done").write_text("")
    return dst


def finished(run: Run) -> bool:
    """True when the run's last step checkpoint exists, or its averaged model came back from the GPU
    machine it trained on (gpu_train.sh packs only that)."""
    exp = EXP / run.name
    return (exp / f"step_{MAX_STEPS}.pt").exists() or (
        trained_on(exp) != "cpu" and (exp / "model" / "model.pt").exists())


def train(run: Run, *, device: str = "cpu", num_workers: int = 0) -> int:
    """Train (or continue) ``run``; ``device`` cuda for a lent GPU; ``num_workers`` loader processes
    (the batches do not depend on it: every augmentation draw is seeded per utterance)."""
    exp = EXP / run.name
    if finished(run):
        print(f"{run.name}: finished")
        return 0
    cmd = [sys.executable, "-m", "qifusion", "train", "--config", str(ROOT / run.config),
           "--data", str(data_dir(run)), "--exp", str(exp)]
    for o in run.all_overrides():
        cmd += ["--set", o]
    if device != "cpu":
        cmd += ["--device", device]
    if num_workers:
        cmd += ["--set", f"data.num_workers={num_workers}"]
    if (exp / "checkpoints.json").exists():
        cmd.append("--resume")
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "study_command.json").write_text(json.dumps(cmd[1:], indent=1) + "\n")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.call(cmd, cwd=ROOT, env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="+", choices=sorted(BY_NAME))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--num-workers", type=int, default=0, help="data loader processes per run")
    args = ap.parse_args()
    for name in args.names:
        rc = train(BY_NAME[name], device=args.device, num_workers=args.num_workers)
        if rc:
            sys.exit(rc)


if __name__ == "__main__":
    main()
