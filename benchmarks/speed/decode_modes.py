"""Decoding speed (RTF) and CER of every search mode at several chunk sizes, through ``qifusion decode``.

    python benchmarks/speed/decode_modes.py --model models/accents-en-qifusion --data data/demo/test \\
        --chunk-sizes=-1,16 --out benchmarks/results/decode_modes.json

For each (mode, chunk size) it runs :func:`qifusion.decode.run.decode_dir` on the data dir (batch
``--batch-size``, ``--threads`` torch threads) and records CER, WER, AID accuracy and RTF (compute
seconds per second of audio, features included). Prints one JSON line per run; writes all to ``--out``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the torch import

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from qifusion.decode.run import decode_dir
from qifusion.fileio import atomic_write_text

MODES = ["ctc_greedy", "ctc_prefix_beam", "attention", "attention_rescoring"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--chunk-sizes", default="-1,16")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--beam-size", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for chunk in [int(c) for c in args.chunk_sizes.split(",")]:
        for mode in args.modes.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                rep = decode_dir(model_dir=Path(args.model), data_dir=Path(args.data), out_dir=Path(tmp),
                                 mode=mode, chunk_size=chunk, beam_size=args.beam_size,
                                 batch_size=args.batch_size, backend=args.backend, device="cpu",
                                 progress=False)
            row = {"mode": mode, "chunk_size": chunk, "backend": args.backend, "cer": rep["cer"],
                   "wer": rep["wer"], "aid_accuracy": rep["aid_accuracy"], "rtf": round(rep["rtf"], 4),
                   "num_utts": rep["num_utts"]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        meta = {"command": " ".join(["python", *sys.argv]), "threads": args.threads,
                "torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count()}
        atomic_write_text(args.out, json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
