"""Training pace of a real run resumed from one of its checkpoints, per variant (heap allocator, overrides).

    python -m benchmarks.speed.resume_pace --run exp/recipe/bf-baseline-s3-accents --step 2000 \\
        --variants "amp=none malloc=system" "amp=bf16 malloc=jemalloc" --repeats 2 \\
        --out benchmarks/results/speed_allocator.json

A short benchmark from fresh weights does not see what slows a long run: the batches of a later epoch
(SpecAugment on, trained weights) and a heap that has served thousands of batch shapes. Here each variant
is ``qifusion train --resume`` from ``RUN.archive/step_STEP.pt`` (or ``RUN/step_STEP.pt``) with the run's
own ``config.yaml``, for ``--steps`` optimizer steps of the same batches (exact resume), through the
console command as a user runs it: its loader process, its feature cache (filled once, before the first
variant, and shared), no dev passes, no checkpoints. A variant is space-separated ``amp=none|bf16`` (the
run's ``train.amp``), ``malloc=system|jemalloc`` (``QIFUSION_MALLOC``, qifusion/malloc.py),
``malloc_conf=...`` (jemalloc's ``MALLOC_CONF`` instead of qifusion's, e.g.
``malloc_conf=background_thread:true,dirty_decay_ms:10000``) and any ``--set`` override
(``data.num_workers=0``). The variants run in turn, ``--repeats`` rounds, the order
reversed every other round, so the host's drift hits all of them. Reported per start: the mean of the
trainer's logged ``audio_per_s`` (seconds of audio per second, one record per 25 steps) without the
first record, the trainer's peak RSS and its resident memory at each record (``rss_mb``, the trainer's
own log); per variant: the mean over its starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.recipe_log import log_records, run_heaps
from benchmarks.speed.speed_common import ROOT, command_line, machine_info
from qifusion import omp

_KEYS = {"amp": ("none", "bf16"), "malloc": ("system", "jemalloc")}


def parse_variant(text: str) -> tuple[dict[str, str], list[str]]:
    """``"amp=bf16 malloc=jemalloc data.num_workers=0"`` -> ({"amp": "bf16", "malloc": "jemalloc"},
    ["data.num_workers=0"]); ValueError naming a bad word."""
    keys: dict[str, str] = {"amp": "none", "malloc": "system"}
    sets = []
    for word in text.split():
        key, eq, value = word.partition("=")
        if not eq or not value:
            raise ValueError(f"variant {text!r}: {word!r} is not KEY=VALUE")
        if key == "malloc_conf":
            keys[key] = value
        elif key in _KEYS:
            if value not in _KEYS[key]:
                raise ValueError(f"variant {text!r}: {key} must be one of {', '.join(_KEYS[key])}")
            keys[key] = value
        else:
            sets.append(word)
    if "malloc_conf" in keys and keys["malloc"] != "jemalloc":
        raise ValueError(f"variant {text!r}: malloc_conf needs malloc=jemalloc")
    return keys, sets


def checkpoint(run: Path, step: int) -> Path:
    """``RUN.archive/step_STEP.pt`` (the recipe's archive of every checkpoint), else ``RUN/step_STEP.pt``."""
    for path in (run.parent / f"{run.name}.archive" / f"step_{step}.pt", run / f"step_{step}.pt"):
        if path.is_file():
            return path
    sys.exit(f"resume_pace: no step_{step}.pt in {run} or {run}.archive")


def start(run: Path, ckpt: Path, *, data: Path, step: int, steps: int, threads: int, variant: str,
          workdir: Path, cache: Path) -> dict[str, Any]:
    """One resumed start of ``variant``; its mean audio per second and log records."""
    keys, sets = parse_variant(variant)
    exp = workdir / "exp"
    shutil.rmtree(exp, ignore_errors=True)
    exp.mkdir()
    for name in ("config.yaml", "cmvn.json", "units.txt", "accents.txt"):
        if (run / name).exists():
            shutil.copy(run / name, exp / name)
    if ckpt.stat().st_dev == exp.stat().st_dev:
        os.link(ckpt, exp / ckpt.name)
    else:
        shutil.copy(ckpt, exp / ckpt.name)
    (exp / "checkpoints.json").write_text(json.dumps([{"file": ckpt.name, "epoch": 0, "step": step}]))
    (exp / "fbank_cache").symlink_to(cache)  # training removes its cache at the end: not the shared one
    cmd = [sys.executable, "-m", "qifusion", "train", "--config", str(exp / "config.yaml"),
           "--data", str(data), "--exp", str(exp), "--resume"]
    for s in [f"train.amp={keys['amp']}", f"train.max_steps={step + steps}", "train.dev_every_steps=0",
              "train.dev_every_epoch=false", "train.save_interval_steps=1000000", "train.average_last=0",
              "train.log_interval=25", *sets]:
        cmd += ["--set", s]
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    env.update(omp.wait_settings(), OMP_NUM_THREADS=str(threads), QIFUSION_MALLOC=keys["malloc"])
    if "malloc_conf" in keys:
        env["MALLOC_CONF"] = keys["malloc_conf"]
    with open(workdir / "train.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this start's own peak RSS (the loader's is less)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        log = (workdir / "train.out").read_text()[-3000:]
        sys.exit(f"resume_pace: {variant}: qifusion train failed:\n{log}")
    train = [r for r in log_records(exp) if r.get("kind") == "train" and r["step"] > step]
    if not train or train[-1]["step"] != step + steps:  # e.g. the run's train.max_minutes spent first
        sys.exit(f"resume_pace: {variant}: training stopped before step {step + steps}: an earlier --step?")
    pace = [r["audio_per_s"] for r in train]
    return {"variant": variant, "heap": run_heaps(exp)[-1],
            "audio_per_s": round(statistics.mean(pace[1:]), 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "records": [round(p, 1) for p in pace], "rss_mb": [r.get("rss_mb") for r in train]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a training run's EXP dir (config.yaml, checkpoints)")
    ap.add_argument("--data", default="data/accents", help="the data dir the run trained on")
    ap.add_argument("--step", type=int, required=True, help="the checkpoint to resume from")
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per start")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["amp=none malloc=system", "amp=bf16 malloc=jemalloc"])
    ap.add_argument("--repeats", type=int, default=2, help="rounds of the variants, order reversed per round")
    ap.add_argument("--out", default="benchmarks/results/speed_allocator.json")
    args = ap.parse_args()
    if args.steps < 50 or (args.step + args.steps) % 25:
        ap.error("--steps: at least 50, and --step + --steps a multiple of 25 (the steps logged)")
    try:
        for v in args.variants:
            parse_variant(v)
    except ValueError as e:
        ap.error(str(e))
    from qifusion.fileio import atomic_write_text

    run, data = Path(args.run), Path(args.data)
    ckpt = checkpoint(run, args.step)
    starts = []
    with tempfile.TemporaryDirectory(prefix="resume_pace.") as tmp:
        cache = Path(tmp) / "fbank_cache"
        cache.mkdir()
        for r in range(args.repeats):
            for v in args.variants if r % 2 == 0 else args.variants[::-1]:
                row = start(run, ckpt, data=data, step=args.step, steps=args.steps, threads=args.threads,
                            variant=v, workdir=Path(tmp), cache=cache)
                print(f"resume_pace: round {r + 1}: {v}: {row['audio_per_s']} s of audio/s, peak "
                      f"{row['peak_rss_mb']} MiB ({row['heap']})", file=sys.stderr)
                starts.append(row)
    summary = {v: round(statistics.mean(s["audio_per_s"] for s in starts if s["variant"] == v), 1)
               for v in args.variants}
    result = {"command": command_line(), "machine": machine_info(), "run": str(run), "checkpoint": str(ckpt),
              "steps": args.steps, "threads": args.threads, "audio_per_s": summary, "starts": starts}
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"resume_pace: {summary}; wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
