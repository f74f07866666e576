"""Load test of ``qifusion serve``: final latency and RTF with 1, 8, 16, 32 concurrent real-time streams.

Starts ``qifusion serve`` in a child process (or uses ``--url``), then for each concurrency level N
runs N WeNet-protocol clients at once; each streams ``--utts`` wavs of ``--data`` in real time
(100 ms frames every 100 ms), sends ``end`` and waits for ``final_result``. Prints one JSON line per
level and writes them all to ``--out``:

- ``final_latency_ms_p50`` / ``_p95``: from sending ``end`` (right after the last audio) to the
  ``final_result`` message, i.e. the wait a user has after they stop speaking;
- ``rtf``: server compute seconds per second of audio (``/health`` totals, all streams together);
- ``realtime_ok``: the server kept up (median latency under 1 s).

Example::

    python -m benchmarks.speed.serve_load --model models/accents-en-qifusion --data data/demo/test \\
        --streams 1,8,16,32 --out benchmarks/results/serve_load_torch.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect

from benchmarks.speed.speed_common import command_line
from qifusion.decode.options import DEFAULT_CHUNK
from qifusion.fileio import atomic_write_text
from qifusion.serve.protocol import parse_server_message

FRAME = 1600  # 100 ms at 16 kHz


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_health(http: str) -> dict:
    with urllib.request.urlopen(http + "health", timeout=10) as r:
        return json.loads(r.read())


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "qifusion", "serve", "--model", args.model, "--port", str(port),
           "--backend", args.backend, "--chunk-size", str(args.chunk_size), "--max-sessions", "256"]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL if not args.verbose else None)
    http = f"http://127.0.0.1:{port}/"
    for _ in range(600):
        try:
            get_health(http)
            return proc, f"ws://127.0.0.1:{port}/"
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"server exited with code {proc.returncode}: {' '.join(cmd)}")
            time.sleep(0.1)
    proc.kill()
    sys.exit("server did not start in 60 s")


async def one_client(url: str, wavs: list[np.ndarray], *, realtime: bool) -> list[float]:
    """Stream each wav as one utterance (one connection each); returns final latencies in seconds."""
    latencies = []
    for audio in wavs:
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"signal": "start", "nbest": 1, "continuous_decoding": False}))
            await ws.recv()
            t_next = time.perf_counter()
            pcm = np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2")
            for i in range(0, len(pcm), FRAME):
                await ws.send(pcm[i: i + FRAME].tobytes())
                if realtime:
                    t_next += FRAME / 16000
                    await asyncio.sleep(max(0.0, t_next - time.perf_counter()))
            t_end = time.perf_counter()
            await ws.send(json.dumps({"signal": "end"}))
            async for m in ws:
                if parse_server_message(m).get("type") == "final_result":
                    latencies.append(time.perf_counter() - t_end)
                    break
    return latencies


async def run_level(url: str, http: str, wavs: list[np.ndarray], n: int, utts: int, *,
                    realtime: bool) -> dict:
    before = get_health(http)
    t0 = time.perf_counter()
    jobs = [one_client(url, [wavs[(c * utts + k) % len(wavs)] for k in range(utts)], realtime=realtime)
            for c in range(n)]
    lat = np.array([x for client in await asyncio.gather(*jobs) for x in client]) * 1000
    wall = time.perf_counter() - t0
    after = get_health(http)
    audio = after["audio_s_total"] - before["audio_s_total"]
    compute = after["compute_s_total"] - before["compute_s_total"]
    return {
        "streams": n, "utterances": len(lat), "audio_s": round(audio, 2), "wall_s": round(wall, 2),
        "final_latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
        "final_latency_ms_p95": round(float(np.percentile(lat, 95)), 1),
        "rtf": round(compute / audio, 4) if audio else None,
        "realtime_ok": bool(np.percentile(lat, 50) < 1000),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model dir (starts a server); or give --url")
    ap.add_argument("--url", help="an already running server, e.g. ws://127.0.0.1:10086/")
    ap.add_argument("--data", required=True, help="Kaldi-style dir with wav.scp (16 kHz wavs)")
    ap.add_argument("--streams", default="1,8,16,32")
    ap.add_argument("--utts", type=int, default=2, help="utterances per client per level")
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx"])
    ap.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK)
    ap.add_argument("--no-realtime", action="store_true", help="send audio as fast as possible")
    ap.add_argument("--out", help="write the results JSON here")
    ap.add_argument("--verbose", action="store_true", help="show the server log")
    args = ap.parse_args()
    if not (args.model or args.url):
        ap.error("give --model (start a server) or --url")
    wavs = []
    for line in (Path(args.data) / "wav.scp").read_text().splitlines():
        audio, sr = sf.read(line.split(maxsplit=1)[1], dtype="float32")
        if sr != 16000:
            sys.exit(f"{line}: {sr} Hz; the WeNet protocol streams 16 kHz")
        wavs.append(audio if audio.ndim == 1 else audio.mean(axis=1))
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args)
    http = url.replace("ws://", "http://").split("?")[0]
    results = {"command": command_line(), "backend": args.backend,
               "chunk_size": args.chunk_size, "realtime": not args.no_realtime, "levels": []}
    try:
        for n in [int(x) for x in args.streams.split(",")]:
            r = asyncio.run(run_level(url, http, wavs, n, args.utts, realtime=not args.no_realtime))
            print(json.dumps(r), flush=True)
            results["levels"].append(r)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    if args.out:
        atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
