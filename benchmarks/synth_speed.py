"""Synthesis speed and corpus size per preset, estimated from a random sample of each preset's plan.

Renders ``--sample`` planned utterances of each preset (seeded) into a temp dir with ``--jobs`` workers,
and reports utterances/s, mean duration, and the preset's estimated hours (mean duration x planned
utterances) and generation time (planned utterances / measured rate).

    .venv/bin/python benchmarks/synth_speed.py --sample 300 --jobs 2
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qifusion.data.synth import plan_corpus, render_utterance
from qifusion.data.synth_plan import PRESETS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="demo,benchmark")
    ap.add_argument("--sample", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"sample {args.sample} utterances per preset, {args.jobs} workers\n")
    print("| preset | utterances (train/dev/test) | est. hours | utt/s | est. generation time |")
    print("|---|---|---|---|---|")
    for name in args.presets.split(","):
        items = plan_corpus(preset=name, utts_per_accent=None, seed=args.seed, accents=None)
        sample = random.Random(args.seed).sample(items, min(args.sample, len(items)))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.jobs) as pool:
                durs = list(pool.map(lambda it: render_utterance(it, Path(tmp) / it.wav), sample))
            elapsed = time.perf_counter() - t0
        rate = len(sample) / elapsed
        hours = sum(durs) / len(durs) * len(items) / 3600
        split = "/".join(str(sum(1 for i in items if i.split == s)) for s in ("train", "dev", "test"))
        print(f"| {name} ({PRESETS[name].utts_per_accent}/accent) | {len(items)} ({split}) | {hours:.2f} | "
              f"{rate:.0f} | {len(items) / rate / 60:.1f} min |")


if __name__ == "__main__":
    main()
