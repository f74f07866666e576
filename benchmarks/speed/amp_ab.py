"""float32 against bf16 autocast train steps, interleaved, on the batch shapes of a training hour.

    python -m benchmarks.speed.amp_ab --config conf/baseline_small.yaml --data data/accents/train \\
        --steps 60 --cache-capacities 1024,32768 --out benchmarks/results/speed_amp_ab.json

A timed comparison of two runs made one after the other measures the host as much as the code: this
machine's pace moves by a third within a session (docs/train.md "bf16 on CPU"). Here one process times a
float32 step and a bf16-autocast step on the same batch, alternating which goes first, so both see the
same host. The batch shapes are those of a training hour: ``--epochs`` epochs of the config's bucketing
sampler on ``--data`` (batch size B, frames = the utterances' augmented seconds x 100, tokens L of the
longest transcript), of which ``--steps`` are drawn (seeded); the features and tokens are random (a step's
cost does not depend on them). Each value of ``--cache-capacities`` (oneDNN's primitive cache,
``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, docs/train.md "bf16 on CPU") runs in a fresh process. Reported per
capacity: mean seconds per step of each mode, their ratio, the peak RSS.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any torch import (workers get it in env)

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.speed.speed_common import command_line, machine_info, peak_rss_mb, run_worker


def hour_shapes(config: str, data: str, *, epochs: int,
                seed: int) -> tuple[list[tuple[int, int, int]], int, int]:
    """(B, frames, tokens) of every training batch in ``epochs`` epochs of ``config`` on ``data`` (no audio
    is read: the sampler's batches, the utterances' augmented seconds and tokenised transcripts), and the
    vocabulary size and accent count a model trained on ``data`` has."""
    from qifusion.config import load_config
    from qifusion.data.augment import augmented_seconds
    from qifusion.data.dataset import build_loader
    from qifusion.data.manifest import load_accents, load_data_dir
    from qifusion.data.tokenizer import Tokenizer

    cfg = load_config(config, [])
    utts = load_data_dir(Path(data), require_text=True, strict=False)
    if any(u.duration is None for u in utts):
        sys.exit(f"amp_ab: {data} needs the utterances' durations (utt2dur, or 'duration' in data.jsonl)")
    accents = load_accents(utts)
    with tempfile.TemporaryDirectory() as tmp:
        tok = Tokenizer.build([u.text for u in utts], token_type=cfg.data.token_type,
                              bpe_vocab_size=cfg.data.bpe_vocab_size, workdir=Path(tmp))
        loader = build_loader(utts, cfg=cfg.data, tokenizer=tok, accents=accents, train=True, seed=seed,
                              feature_cache=None)
    by_id = {u.utt_id: u for u in utts}
    num_tokens = {u.utt_id: len(tok.encode(u.text)) for u in utts}
    shapes = []
    for epoch in range(1, epochs + 1):
        loader.set_epoch(epoch)
        for ids in loader.batch_utt_ids():
            secs = [augmented_seconds(by_id[i].duration, cfg=cfg.data, seed=seed, epoch=epoch, utt_id=i)
                    for i in ids]
            shapes.append((len(ids), int(max(secs) * 100), max(num_tokens[i] for i in ids)))
    return shapes, tok.vocab_size, len(accents)


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Interleaved float32 / bf16 steps of ``spec['config']`` on ``spec['shapes']``; mean seconds each."""
    import torch

    from qifusion.config import load_config
    from qifusion.models.model import QifusionModel

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = QifusionModel(load_config(spec["config"], []).model, vocab_size=spec["vocab"],
                          num_accents=spec["accents"])
    if spec.get("init"):  # a trained model's weights: a step's cost may depend on them
        from qifusion.train.checkpoint import load_checkpoint

        model.load_state_dict(load_checkpoint(Path(spec["init"]))["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch: tuple[torch.Tensor, ...], bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(*batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - t0

    seconds = {False: 0.0, True: 0.0}
    for i, (b, t, n) in enumerate(spec["shapes"]):
        batch = (torch.randn(b, t, 80), torch.full((b,), t), torch.randint(1, spec["vocab"], (b, n)),
                 torch.full((b,), n), torch.zeros(b, dtype=torch.long))
        for bf16 in (False, True) if i % 2 else (True, False):
            seconds[bf16] += step(batch, bf16)
    n = len(spec["shapes"])
    return {"onednn_cache": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"), "steps": n,
            "float32_s_per_step": round(seconds[False] / n, 4),
            "bf16_s_per_step": round(seconds[True] / n, 4),
            "bf16_speedup": round(seconds[False] / seconds[True], 3), "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--config", default="conf/baseline_small.yaml")
    ap.add_argument("--data", default="data/accents/train", help="training data dir (its batch shapes)")
    ap.add_argument("--epochs", type=int, default=12, help="epochs of batch shapes to draw from (~1 hour)")
    ap.add_argument("--steps", type=int, default=60, help="batches drawn, each timed in both modes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="sampler seed and draw")
    ap.add_argument("--cache-capacities", default="1024,32768",
                    help="oneDNN primitive cache sizes, comma list")
    ap.add_argument("--init", default="", metavar="CKPT",
                    help="start from a training checkpoint of --config on --data instead of fresh weights")
    ap.add_argument("--out", default="benchmarks/results/speed_amp_ab.json")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    from qifusion.fileio import atomic_write_text

    if args.steps < 1 or args.epochs < 1:
        ap.error("--steps and --epochs must be >= 1")
    shapes, vocab, accents = hour_shapes(args.config, args.data, epochs=args.epochs, seed=args.seed)
    drawn = random.Random(args.seed).choices(shapes, k=args.steps)
    result: dict[str, Any] = {"command": command_line(), "machine": machine_info(), "config": args.config,
                              "data": args.data, "init": args.init or None, "hour_batches": len(shapes),
                              "distinct_shapes": len(set(shapes)), "runs": []}
    for capacity in [c for c in args.cache_capacities.split(",") if c]:
        spec = {"config": args.config, "shapes": drawn, "vocab": vocab, "accents": accents, "init": args.init}
        row = run_worker(__spec__.name, spec, threads=args.threads,
                         env={"ONEDNN_PRIMITIVE_CACHE_CAPACITY": capacity})
        print(f"amp_ab: cache {capacity}: float32 {row['float32_s_per_step']} s/step, bf16 "
              f"{row['bf16_s_per_step']} s/step: {row['bf16_speedup']}x (peak {row['peak_rss_mb']} MiB)",
              file=sys.stderr)
        result["runs"].append(row)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"amp_ab: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
