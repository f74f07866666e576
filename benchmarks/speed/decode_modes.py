"""Decoding speed (RTF) and CER of every search mode at several chunk sizes, through ``qifusion decode``.

    python -m benchmarks.speed.decode_modes --model models/accents-en-qifusion --data data/demo/test \\
        --chunk-sizes=-1,16 --out benchmarks/results/decode_modes.json

For each (mode, chunk size) it runs :func:`qifusion.decode.run.decode_dir` on the data dir (batch
``--batch-size``, ``--threads`` torch threads) ``--repeats`` times and records CER, WER, AID accuracy
and the median RTF (compute seconds per second of audio: audio reading, features, encoder and search).
Prints one JSON line per (mode, chunk size); writes all to ``--out``. :func:`decode_rows` is the
library entry used by ``rtf.py`` (backends x thread counts in fresh processes).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the torch import

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from qifusion.decode.options import DEFAULT_BEAM
from qifusion.decode.run import decode_dir
from qifusion.fileio import atomic_write_text

MODES = ["ctc_greedy", "ctc_prefix_beam", "attention", "attention_rescoring"]


def decode_rows(
    *,
    model: Path,
    data: Path,
    modes: list[str],
    chunk_sizes: list[int],
    backend: str = "torch",
    left_chunks: int = -1,
    batch_size: int = 16,
    beam_size: int = 10,
    repeats: int = 1,
    echo: bool = True,
) -> list[dict[str, Any]]:
    """One row per (chunk size, mode): ``decode_dir`` run ``repeats`` times; ``rtf`` is the median and
    ``rtf_runs`` every run's RTF. CER/WER/AID come from the last run (decoding is deterministic)."""
    rows = []
    for chunk in chunk_sizes:
        for mode in modes:
            rtfs, rep = [], {}
            for _ in range(max(1, repeats)):
                with tempfile.TemporaryDirectory() as tmp:
                    rep = decode_dir(model_dir=model, data_dir=data, out_dir=Path(tmp), mode=mode,
                                     chunk_size=chunk, left_chunks=left_chunks, beam_size=beam_size,
                                     batch_size=batch_size, backend=backend, device="cpu", progress=False)
                rtfs.append(rep["rtf"])
            row = {"mode": mode, "chunk_size": chunk, "left_chunks": left_chunks, "backend": backend,
                   "cer": rep["cer"], "wer": rep["wer"], "aid_accuracy": rep["aid_accuracy"],
                   "rtf": round(statistics.median(rtfs), 4), "rtf_runs": [round(r, 4) for r in rtfs],
                   "num_utts": rep["num_utts"]}
            if echo:
                print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--chunk-sizes", default="-1,16")
    p.add_argument("--left-chunks", type=int, default=-1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--beam-size", type=int, default=DEFAULT_BEAM)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="RTF = median over this many runs")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = decode_rows(model=Path(args.model), data=Path(args.data), modes=args.modes.split(","),
                       chunk_sizes=[int(c) for c in args.chunk_sizes.split(",")], backend=args.backend,
                       left_chunks=args.left_chunks, batch_size=args.batch_size, beam_size=args.beam_size,
                       repeats=args.repeats, echo=False)
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.out:
        from benchmarks.speed.speed_common import command_line, machine_info

        meta = {"command": command_line(), "threads": args.threads, **machine_info()}
        atomic_write_text(args.out, json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
