"""Training throughput (seconds of audio per second) of the study's configs through qifusion's Trainer.

    python -m benchmarks.speed.train_throughput --configs conf/qifusion_small.yaml,conf/baseline_small.yaml \\
        --data data/benchmark/train --threads 1,2 --steps 5 --out benchmarks/results/speed_train.json \\
        --variant model.encoder.subsampling_channels=0     # each config also with these overrides

Each (config, thread count) runs in a fresh subprocess (``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY=PASSIVE``
set before torch is imported, ``torch.set_num_threads``) that builds the model, tokenizer (char units of
the training text), accents and a CMVN estimate as ``qifusion train`` does, then runs
:class:`qifusion.train.loop.Trainer` for ``--warmup + --steps`` optimizer steps on real training batches
of the data dir (``build_loader``: bucketing by ``data.max_duration``, ``--max-duration`` 50 s as the
accuracy study; speed perturbation, silence padding and SpecAugment as in training; dynamic chunk
masking; gradient clipping; the config's optimizer and schedule). Per step it records:

- ``step_s``: forward + backward + clipping + optimizer/scheduler step (from the batch handed to the
  trainer to the trainer's end-of-step log record),
- ``load_s``: producing the batch (audio reading, augmentation, fbank),
- ``audio_s``: seconds of audio in the batch,
- the batch's feature frames, padded (B x T) and valid: ``padded_frames_ratio`` is their ratio over the
  measured steps (1.0 = no padding).

With ``data.feature_cache`` the cache starts cold, as in a run's first epoch, unless the config also sets
``data.feature_cache_prefill``: then every entry is computed first, on all cores, as ``qifusion train``
does before its clock starts (``prefill_minutes``), and the steps read a warm cache.

Reported (medians over the steps after the ``--warmup`` ones): ``audio_per_s`` (audio / step_s, the
model's throughput), ``audio_per_s_with_loading`` (audio / (step_s + load_s), what a single-process run
sees), ``audio_per_s_total`` (all measured audio over all measured step and load time: with
``data.num_workers`` > 0, ``load_s`` is the wait for a batch the loader processes made while the model
trained), step and batch medians, and the worker's peak RSS in MiB.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any torch import (workers get it in env)

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.speed.speed_common import command_line, machine_info, median, peak_rss_mb, run_worker


class TimedLoader:
    """Wraps a qifusion ``Loader``: records each batch's load time, audio seconds and hand-over time."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.load_s: list[float] = []
        self.audio_s: list[float] = []
        self.handed: list[float] = []
        self.frames: list[tuple[int, int]] = []  # per batch: (padded B x T, valid) feature frames

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                return
            t1 = time.perf_counter()
            self.load_s.append(t1 - t0)
            self.audio_s.append(float(batch.durations.sum()))
            self.frames.append((batch.feats.shape[0] * batch.feats.shape[1], int(batch.feats_lens.sum())))
            self.handed.append(t1)
            yield batch


class StepClock:
    """Stands in for ``MetricsLog``: the trainer writes a ``train`` record at the end of every optimizer
    step (``train.log_interval=1``); we keep the time it arrives."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def write(self, record: dict[str, Any]) -> None:
        if record.get("kind") == "train":
            self.ends.append(time.perf_counter())

    def close(self) -> None:
        pass


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Train ``warmup + steps`` steps of one config at ``spec['threads']`` threads; returns the medians."""
    import torch

    from qifusion.config import load_config
    from qifusion.data.cmvn import cmvn_from_utterances
    from qifusion.data.dataset import build_loader
    from qifusion.data.manifest import load_accents, load_data_dir
    from qifusion.data.tokenizer import Tokenizer
    from qifusion.models.model import QifusionModel
    from qifusion.train.ddp import DistInfo, cpu_cores
    from qifusion.train.loop import Trainer
    from qifusion.train.run import build_optimizer, seed_everything
    from qifusion.train.scheduler import build_scheduler

    torch.set_num_threads(spec["threads"])
    total = spec["warmup"] + spec["steps"]
    fixed = [f"data.max_duration={spec['max_duration']}", f"train.max_steps={total}", "train.log_interval=1",
             "train.accum_grad=1", "train.save_interval_steps=0"]
    cfg = load_config(spec["config"], [*spec.get("overrides", []), *fixed])
    utts = load_data_dir(Path(spec["data"]), require_text=True, strict=False)
    accents = load_accents(utts)
    with tempfile.TemporaryDirectory() as tmp:
        tok = Tokenizer.build([u.text for u in utts], token_type=cfg.data.token_type,
                              bpe_vocab_size=cfg.data.bpe_vocab_size, workdir=Path(tmp))
        seed_everything(cfg.train.seed)
        model = QifusionModel(cfg.model, vocab_size=tok.vocab_size, num_accents=len(accents))
        mean, istd, _ = cmvn_from_utterances(utts[:: max(1, len(utts) // 50)], max_utts=50,
                                             num_mel_bins=cfg.data.num_mel_bins)
        model.encoder.set_cmvn(mean, istd)
        optimizer = build_optimizer(cfg, model)
        scheduler = build_scheduler(optimizer, name=cfg.train.scheduler, warmup_steps=cfg.train.warmup_steps,
                                    total_steps=total)
        cache = Path(tmp) / "fbank_cache" if cfg.data.feature_cache else None  # starts cold, as in a run
        loader = TimedLoader(build_loader(utts, cfg=cfg.data, tokenizer=tok, accents=accents, train=True,
                                          seed=cfg.train.seed, feature_cache=cache))
        filled = None
        if cache is not None and cfg.data.feature_cache_prefill:  # as `qifusion train`: before the clock
            filled = loader.loader.prefill_cache(processes=cpu_cores())
        clock = StepClock()
        trainer = Trainer(model=model, optimizer=optimizer, scheduler=scheduler, train_loader=loader,
                          cfg=cfg.train, dist_info=DistInfo(), exp_dir=Path(tmp) / "exp", evaluate=None,
                          metrics=clock, progress=False)  # type: ignore[arg-type]
        state = trainer.fit()
    if state.skipped_nonfinite_loss or state.skipped_nonfinite_grad or len(clock.ends) != total:
        sys.exit(f"train_throughput: {spec['config']}: {len(clock.ends)} of {total} steps completed "
                 f"(non-finite loss {state.skipped_nonfinite_loss}, grad {state.skipped_nonfinite_grad})")
    step_s = [e - h for e, h in zip(clock.ends, loader.handed)]
    keep = slice(spec["warmup"], total)
    steps, loads, audio = step_s[keep], loader.load_s[keep], loader.audio_s[keep]
    frames = loader.frames[keep]
    return {
        "config": spec["config"], "threads": spec["threads"], "max_duration": spec["max_duration"],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "steps": len(steps), "warmup_steps": spec["warmup"],
        "audio_per_s": round(median([a / s for a, s in zip(audio, steps)]), 2),
        "audio_per_s_with_loading": round(median([a / (s + x) for a, s, x in zip(audio, steps, loads)]), 2),
        "audio_per_s_total": round(sum(audio) / (sum(steps) + sum(loads)), 2),
        "step_s_median": round(median(steps), 3), "load_s_median": round(median(loads), 3),
        "batch_audio_s_median": round(median(audio), 2),
        "padded_frames_ratio": round(sum(p for p, _ in frames) / sum(v for _, v in frames), 3),
        "step_s": [round(s, 3) for s in step_s], "load_s": [round(x, 3) for x in loader.load_s],
        "batch_audio_s": [round(a, 2) for a in loader.audio_s],
        "peak_rss_mb": peak_rss_mb(),
        "prefill_minutes": None if filled is None else round(filled.seconds / 60, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--configs", default="conf/qifusion_small.yaml,conf/baseline_small.yaml")
    ap.add_argument("--data", default="data/benchmark/train", help="training data dir")
    ap.add_argument("--threads", default="1,2", help="comma list; each in a fresh process")
    ap.add_argument("--steps", type=int, default=5, help="measured optimizer steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--max-duration", type=float, default=50.0, help="seconds of audio per batch")
    ap.add_argument("--out", default="benchmarks/results/speed_train.json")
    ap.add_argument("--variant", action="append", default=[], metavar="KEY=VAL[;KEY=VAL]",
                    help="also measure every config with these overrides (repeatable), e.g. "
                         "'model.encoder.subsampling_channels=0'")
    ap.add_argument("--spin-counts", default="",
                    help="comma list of GOMP_SPINCOUNT values to measure each run under (default: the "
                         "environment's, else qifusion.omp's); e.g. '0,2000': passive waits vs a short spin")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    from qifusion.fileio import atomic_write_text

    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    result: dict[str, Any] = {"command": command_line(), "machine": machine_info(), "data": args.data,
                              "runs": []}
    spins = [int(x) for x in args.spin_counts.split(",") if x] or [None]
    runs = [(t, c, v, n) for t in [int(x) for x in args.threads.split(",")] for c in args.configs.split(",")
            for v in ["", *args.variant] for n in spins]
    for t, config, variant, spin in runs:
        spec = {"config": config, "data": args.data, "steps": args.steps, "warmup": args.warmup,
                "max_duration": args.max_duration, "overrides": [o for o in variant.split(";") if o]}
        env = {} if spin is None else {"GOMP_SPINCOUNT": str(spin)}
        row = {**run_worker(__spec__.name, spec, threads=t, env=env), "overrides": spec["overrides"]}
        print(f"train_throughput: {config} {variant}, {t} thread(s), GOMP_SPINCOUNT {row['gomp_spincount']}: "
              f"{row['audio_per_s']} s audio/s ({row['step_s_median']} s/step, "
              f"peak {row['peak_rss_mb']} MiB)", file=sys.stderr)
        result["runs"].append(row)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"train_throughput: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
