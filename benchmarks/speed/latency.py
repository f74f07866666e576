"""Streaming latency of the Recognizer: first-partial and final latency, compute time per chunk.

    python -m benchmarks.speed.latency --model models/accents-en-qifusion --chunk-size 16 [--wav F.wav]
    python -m benchmarks.speed.latency --model exp/speed/onnx --backend onnx --chunk-size 16 --wav F.wav

Audio is fed in real-time-sized pieces (``--piece-ms``); latencies are measured in milliseconds of
*audio*: first-partial latency = audio position when the first non-empty partial appears minus the
time of its first token (CTC timestamp); final latency = audio already fed when the final result is
available minus the end of the audio (always 0 with an ideal endpoint; here it is the compute time
of the last chunk + rescoring, reported in ms of wall clock). Per-chunk compute time is the median
wall time of ``decode()`` calls. Prints one JSON line (with the command). Without ``--wav`` a synthetic
signal is used. ``--backend onnx`` takes an export dir and runs its exported chunk size only; its
onnxruntime sessions get ``--threads`` intra-op threads.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the torch import

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.speed.speed_common import command_line
from qifusion.decode.options import DEFAULT_CHUNK


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--wav", default=None)
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    p.add_argument("--left-chunks", type=int, default=-1)
    p.add_argument("--mode", default="ctc_prefix_beam")
    p.add_argument("--piece-ms", type=float, default=100.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read by qifusion's onnxruntime sessions

    from qifusion.data.audio import read_audio
    from qifusion.decode.recognizer import Recognizer

    label, left = args.backend, args.left_chunks
    if args.backend == "onnx":  # name int8 exports apart; ONNX runs its exported left chunks
        from qifusion.export.onnx_backend import find_export_dir

        info = json.loads((find_export_dir(Path(args.model)) / "export.json").read_text())
        label = "onnx_int8" if info.get("int8") else "onnx"
        left = int(info["left_chunks"])
    rec = Recognizer.from_model_dir(args.model, chunk_size=args.chunk_size, left_chunks=args.left_chunks,
                                    mode=args.mode, backend=args.backend)
    sr = 16000
    if args.wav:
        x = read_audio(args.wav)
    else:
        t = np.arange(5 * sr) / sr
        x = (0.1 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    piece = int(args.piece_ms * sr / 1000)
    chunk_ms, first_partial, final_ms = [], [], []
    for _ in range(args.repeats):
        s = rec.create_stream()
        first = None
        for i in range(0, x.shape[0], piece):
            s.accept_waveform(sr, x[i : i + piece])
            while rec.is_ready(s):
                t0 = time.perf_counter()
                rec.decode(s)
                chunk_ms.append(1000 * (time.perf_counter() - t0))
                if first is None and s.result.tokens:
                    fed = 1000 * min(i + piece, x.shape[0]) / sr
                    first = fed - 1000 * s.result.timestamps[0]
        t0 = time.perf_counter()
        s.input_finished()
        while rec.is_ready(s):
            rec.decode(s)
        final_ms.append(1000 * (time.perf_counter() - t0))
        if first is not None:
            first_partial.append(first)
    print(json.dumps({
        "chunk_size": args.chunk_size,
        "chunk_audio_ms": args.chunk_size * rec.frame_shift * 1000,
        "per_chunk_compute_ms_median": round(statistics.median(chunk_ms), 2),
        "first_partial_latency_audio_ms": (
            round(statistics.median(first_partial), 1) if first_partial else None
        ),
        "final_latency_wall_ms_median": round(statistics.median(final_ms), 2),
        "audio_s": round(x.shape[0] / sr, 2),
        "threads": args.threads,
        "backend": label,
        "left_chunks": left,
        "mode": args.mode,
        "text": s.result.text,
        "command": command_line(),
    }))


if __name__ == "__main__":
    main()
