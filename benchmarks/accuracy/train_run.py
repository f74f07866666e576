"""Train one run of the accuracy study (resumable): ``python benchmarks/accuracy/train_run.py NAME``.

Reruns continue from the newest checkpoint; a finished run (``max_steps`` reached) returns at once.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spec import BY_NAME, CORPUS, Run

ROOT = Path(__file__).resolve().parents[2]
EXP = ROOT / "exp" / "study"


def data_dir(run: Run) -> Path:
    """The run's data dir (train/ and dev/); a filtered copy of the lists when an accent is held out."""
    src = ROOT / CORPUS
    if run.without_accent is None:
        return src
    dst = ROOT / "data" / f"benchmark_without_{run.without_accent}"
    if (dst / "done").exists():
        return dst
    for split in ("train", "dev"):
        out = dst / split
        out.mkdir(parents=True, exist_ok=True)
        keep = {
            line.split()[0]
            for line in (src / split / "utt2accent").read_text().splitlines()
            if line.split()[1] != run.without_accent
        }
        for name in ("wav.scp", "text", "utt2accent", "utt2spk", "utt2dur"):
            if (src / split / name).exists():
                lines = (src / split / name).read_text().splitlines()
                (out / name).write_text("".join(ln + "\n" for ln in lines if ln.split(maxsplit=1)[0] in keep))
    (dst / "done").write_text("")
    return dst


def finished(run: Run) -> bool:
    """True when the run's last step checkpoint exists."""
    steps = int(next(o for o in run.all_overrides() if o.startswith("train.max_steps=")).split("=")[1])
    return (EXP / run.name / f"step_{steps}.pt").exists()


def train(run: Run) -> int:
    exp = EXP / run.name
    if finished(run):
        print(f"{run.name}: finished")
        return 0
    cmd = [sys.executable, "-m", "qifusion", "train", "--config", str(ROOT / run.config),
           "--data", str(data_dir(run)), "--exp", str(exp)]
    for o in run.all_overrides():
        cmd += ["--set", o]
    if (exp / "checkpoints.json").exists():
        cmd.append("--resume")
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "study_command.json").write_text(json.dumps(cmd[1:], indent=1) + "\n")
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    return subprocess.call(cmd, cwd=ROOT, env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="+", choices=sorted(BY_NAME))
    args = ap.parse_args()
    for name in args.names:
        rc = train(BY_NAME[name])
        if rc:
            sys.exit(rc)


if __name__ == "__main__":
    main()
