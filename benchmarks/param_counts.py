"""Parameter counts (and optionally forward/backward time) of the shipped model configs.

    .venv/bin/python benchmarks/param_counts.py                 # markdown table of parameter counts
    .venv/bin/python benchmarks/param_counts.py --time conf/qifusion_small.yaml  # + fwd/bwd seconds

Counts assume the English character units (V=31) and 8 accents of the embedded corpus.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from qifusion.config import load_config
from qifusion.models.model import QifusionModel

CONFIGS = ["tiny", "baseline_small", "qifusion_small", "baseline_small_matched", "baseline", "qifusion"]


def counts(model: QifusionModel) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, p in model.named_parameters():
        part = name.split(".")[0]
        part = {"laf": "accent", "last_embed": "accent", "aid": "accent", "fusion": "accent"}.get(part, part)
        out[part] = out.get(part, 0) + p.numel()
    out["total"] = sum(p.numel() for p in model.parameters())
    return out


def fwd_bwd_seconds(model: QifusionModel, *, batch: int, frames: int, repeats: int = 3) -> float:
    """Median seconds of one training step's forward+backward on (batch, frames) random fbank."""
    model.train()
    feats = torch.randn(batch, frames, 80)
    lens = torch.full((batch,), frames)
    tokens = torch.randint(2, 30, (batch, frames // 40))
    tl = torch.full((batch,), tokens.size(1))
    acc = torch.zeros(batch, dtype=torch.long)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(feats, lens, tokens, tl, acc)["loss"].backward()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--time", nargs="*", default=None, help="config files to time (fwd+bwd)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=1000)
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    print("| config | total | encoder | accent (LAF+AID+fusion) | CTC | decoder | fp16 MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in CONFIGS:
        cfg = load_config(root / "conf" / f"{name}.yaml").model
        c = counts(QifusionModel(cfg, vocab_size=31, num_accents=8))
        print(
            f"| {name} | {c['total']:,} | {c['encoder']:,} | {c.get('accent', 0):,} | {c['ctc']:,} | "
            f"{c.get('decoder', 0) + c.get('r_decoder', 0):,} | {c['total'] * 2 / 1e6:.1f} |"
        )
    for path in args.time or []:
        torch.manual_seed(0)
        cfg = load_config(path).model
        model = QifusionModel(cfg, vocab_size=31, num_accents=8)
        s = fwd_bwd_seconds(model, batch=args.batch, frames=args.frames)
        print(
            f"{path}: fwd+bwd {s:.2f} s per batch of {args.batch} x {args.frames} frames "
            f"({torch.get_num_threads()} threads)"
        )


if __name__ == "__main__":
    main()
