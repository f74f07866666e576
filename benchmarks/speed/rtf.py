"""Offline decoding RTF by backend (torch, ONNX float, ONNX int8) x threads x mode x chunk size, plus
feature-extraction speed and peak memory; one JSON file.

    python -m benchmarks.speed.rtf --model models/accents-en-qifusion --onnx exp/speed/onnx \\
        --data data/benchmark/test --num-utts 80 --threads 1,2 --repeats 3 \\
        --out benchmarks/results/speed_rtf.json

``--num-utts`` utterances of ``--data`` are picked round-robin over accents. For every thread count,
each backend runs in a fresh subprocess (``OMP_NUM_THREADS`` / ``OMP_WAIT_POLICY=PASSIVE`` set before
torch is imported; ``torch.set_num_threads``; onnxruntime intra-op threads from ``OMP_NUM_THREADS``)
that decodes with :func:`decode_modes.decode_rows` (``qifusion.decode.run.decode_dir``: audio reading,
fbank, encoder and search are in the RTF, model loading is not). RTF = median over ``--repeats`` runs,
after one untimed warm-up decode of two utterances. ONNX graphs are exported at a fixed chunk size and
left chunks (``export.json``), so ONNX rows exist only for that chunk size; full context is torch only.
Feature extraction (``compute_fbank``, offline, and ``OnlineFbank`` fed 100 ms pieces) is timed in its
own subprocess per thread count: seconds of audio per second, median over repeats. Every worker
reports its peak RSS (MiB). ``--onnx-int8`` defaults to ``ONNX/int8``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any torch import (workers get it in env)

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.speed.speed_common import (
    command_line,
    machine_info,
    median,
    peak_rss_mb,
    run_worker,
    write_subset,
)
from qifusion.decode.options import DEFAULT_BEAM

BACKENDS = ("torch", "onnx", "onnx_int8")


# ---------------------------------------------------------------------------------------- workers
def _fbank_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from qifusion.data.audio import read_audio
    from qifusion.data.features import OnlineFbank, compute_fbank
    from qifusion.data.manifest import load_data_dir

    torch.set_num_threads(spec["threads"])
    waves = [read_audio(u.audio, start=u.start, end=u.end, utt_id=u.utt_id)
             for u in load_data_dir(Path(spec["data"]), require_text=True)]
    audio_s = sum(w.shape[0] for w in waves) / 16000
    piece = 1600

    def offline() -> None:
        for w in waves:
            compute_fbank(w)

    def online() -> None:
        for w in waves:
            f = OnlineFbank()
            for i in range(0, w.shape[0], piece):
                f.accept_waveform(16000, w[i : i + piece])
            f.input_finished()
            f.get_frames(0, f.num_frames_ready)

    res: dict[str, Any] = {"kind": "fbank", "threads": spec["threads"], "audio_s": round(audio_s, 2)}
    compute_fbank(np.zeros(16000, dtype=np.float32))  # warm-up
    for name, fn in (("offline", offline), ("online", online)):
        times = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        res[f"{name}_audio_s_per_s"] = round(audio_s / median(times), 1)
        res[f"{name}_runs_s"] = [round(t, 4) for t in times]
    res["peak_rss_mb"] = peak_rss_mb()
    return res


def _decode_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from benchmarks.speed.decode_modes import decode_rows
    from qifusion.data.manifest import load_data_dir, write_kaldi_dir

    torch.set_num_threads(spec["threads"])
    backend = "onnx" if spec["backend"].startswith("onnx") else "torch"
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: lazy inits, first-call allocations
        write_kaldi_dir(load_data_dir(Path(spec["data"]), require_text=True)[:2], Path(tmp) / "d")
        decode_rows(model=Path(spec["model"]), data=Path(tmp) / "d", modes=spec["modes"][:1],
                    chunk_sizes=spec["chunk_sizes"][:1], backend=backend, left_chunks=spec["left_chunks"],
                    batch_size=spec["batch_size"], echo=False)
    rows = decode_rows(model=Path(spec["model"]), data=Path(spec["data"]), modes=spec["modes"],
                       chunk_sizes=spec["chunk_sizes"], backend=backend, left_chunks=spec["left_chunks"],
                       batch_size=spec["batch_size"], beam_size=spec["beam_size"], repeats=spec["repeats"])
    for r in rows:
        r.update(backend=spec["backend"], threads=spec["threads"])
    return {"kind": "decode", "backend": spec["backend"], "threads": spec["threads"], "runs": rows,
            "peak_rss_mb": peak_rss_mb()}


def worker_main(spec: dict[str, Any]) -> None:
    """Run one measurement (in a fresh process) and print its JSON line."""
    out = _fbank_worker(spec) if spec["kind"] == "fbank" else _decode_worker(spec)
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------- parent
def _export_info(onnx_dir: Path) -> dict[str, Any]:
    path = onnx_dir / "export.json"
    if not path.is_file():
        sys.exit(f"{path} not found: run `qifusion export --model MODEL --out {onnx_dir} --int8` first "
                 "(or leave the ONNX backends out with --backends torch)")
    return json.loads(path.read_text())


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The decode jobs of one thread count: one per backend, with the chunk sizes it can run."""
    chunks = [int(c) for c in args.chunk_sizes.split(",")]
    modes = args.modes.split(",")
    jobs = []
    for b in args.backends.split(","):
        if b not in BACKENDS:
            sys.exit(f"--backends: unknown backend {b!r} (choose from {', '.join(BACKENDS)})")
        common = {"kind": "decode", "backend": b, "modes": modes, "batch_size": args.batch_size,
                  "beam_size": args.beam_size, "repeats": args.repeats}
        if b == "torch":
            jobs.append({**common, "model": args.model, "chunk_sizes": chunks,
                         "left_chunks": args.left_chunks})
            continue
        d = Path(args.onnx) if b == "onnx" else Path(args.onnx_int8 or Path(args.onnx) / "int8")
        info = _export_info(d)
        ok = [c for c in chunks if c == int(info["chunk_size"])]
        if not ok:
            print(f"rtf: {b} skipped: exported at chunk {info['chunk_size']}, asked for {chunks}",
                  file=sys.stderr)
            continue
        jobs.append({**common, "model": str(d), "chunk_sizes": ok, "left_chunks": int(info["left_chunks"])})
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="models/accents-en-qifusion", help="torch model dir")
    ap.add_argument("--onnx", default=None, help="ONNX export dir (default MODEL/onnx)")
    ap.add_argument("--onnx-int8", default=None, help="int8 export dir (default ONNX/int8)")
    ap.add_argument("--data", default="data/benchmark/test", help="test data dir (Kaldi, jsonl or lhotse)")
    ap.add_argument("--num-utts", type=int, default=80, help="balanced over accents; 0 = all")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--threads", default="1,2", help="comma list; each in fresh processes")
    ap.add_argument("--modes", default="attention_rescoring,ctc_greedy")
    ap.add_argument("--chunk-sizes", default="-1,16")
    ap.add_argument("--left-chunks", type=int, default=-1, help="torch backend (ONNX: the exported value)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--beam-size", type=int, default=DEFAULT_BEAM)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/speed_rtf.json")
    args = ap.parse_args()
    if args.worker:
        worker_main(json.loads(args.worker))
        return
    from qifusion.fileio import atomic_write_text

    args.onnx = args.onnx or str(Path(args.model) / "onnx")
    jobs = plan(args)
    result: dict[str, Any] = {"command": command_line(), "machine": machine_info(), "repeats": args.repeats,
                              "runs": [], "fbank": [], "memory": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        n, secs = write_subset(Path(args.data), data, args.num_utts)
        result["data"] = {"source": args.data, "num_utts": n, "audio_s": secs}
        for t in [int(x) for x in args.threads.split(",")]:
            spec = {"kind": "fbank", "data": str(data), "repeats": args.repeats}
            fb = run_worker(__spec__.name, spec, threads=t)
            result["fbank"].append(fb)
            result["memory"].append({"what": "fbank", "threads": t, "peak_rss_mb": fb["peak_rss_mb"]})
            print(f"rtf: fbank {t} thread(s): {fb['offline_audio_s_per_s']} s audio/s", file=sys.stderr)
            for job in jobs:
                out = run_worker(__spec__.name, {**job, "data": str(data)}, threads=t)
                result["runs"].extend(out["runs"])
                result["memory"].append({"what": f"decode {job['backend']}", "threads": t,
                                         "peak_rss_mb": out["peak_rss_mb"]})
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(f"rtf: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
