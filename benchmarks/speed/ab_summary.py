"""Markdown table of an ``ab.sh`` result dir: medians over the reps of each side (ref, new) and ratios.

    python -m benchmarks.speed.ab_summary benchmarks/results/issue19 > benchmarks/results/issue19/summary.md
    python -m benchmarks.speed.ab_summary DIR --json DIR/summary.json   # also the targets as JSON

Rows: the small encoder's chunk step (1 thread) against WeNet's figure; the Recognizer's per-chunk
compute and final latency (torch and ONNX, chunk 16, 4 left chunks); offline RTF (torch and ONNX,
chunk 16, 4 left chunks, per mode); ``qifusion serve`` final latency p50/p95 and RTF per number of
streams (torch and ONNX). Then issue 19's three speed targets per side: the encoder chunk step over
WeNet's figure (<= 0.4), ONNX's speed-up over torch per chunk (>= 1.3) and the serve p95 final latency
of 32 streams (<= 200 ms). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.speed.summary import WENET

SIDES = ("ref", "new")
TARGETS = {"encoder_vs_wenet": 0.4, "onnx_speedup_per_chunk": 1.3, "serve_torch_32_p95_ms": 200.0}
AT_LEAST = {"onnx_speedup_per_chunk"}  # targets met from above; the others are upper bounds


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _med(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 4) if xs else None


def _row(label: str, ref: float | None, new: float | None) -> str:
    ratio = f"{new / ref:.2f}" if ref and new is not None else "-"
    return f"| {label} | {ref if ref is not None else '-'} | {new if new is not None else '-'} | {ratio} |"


def targets(d: Path) -> dict[str, dict[str, float | None]]:
    """Per side, issue 19's speed targets (see :data:`TARGETS`; None where not measured)."""
    res: dict[str, dict[str, float | None]] = {}
    wenet = WENET["small"]["per_chunk_ms"]
    for s in SIDES:
        enc = _med([r["per_chunk_ms"] for r in _lines(d / f"encoder_small_ct1_{s}.jsonl")])
        lat = _lines(d / f"latency_{s}.jsonl")
        t = _med([r["per_chunk_compute_ms_median"] for r in lat if r.get("backend") == "torch"])
        o = _med([r["per_chunk_compute_ms_median"] for r in lat if r.get("backend") == "onnx"])
        serve = {}
        for backend in ("torch", "onnx"):
            p95 = []
            for p in sorted(d.glob(f"serve_load_{backend}_{s}_rep*.json")):
                p95 += [r["final_latency_ms_p95"] for r in json.loads(p.read_text())["levels"]
                        if int(r["streams"]) == 32]
            serve[backend] = _med(p95)
        res[s] = {"encoder_ms_per_chunk": enc, "encoder_vs_wenet": round(enc / wenet, 3) if enc else None,
                  "torch_ms_per_chunk": t, "onnx_ms_per_chunk": o,
                  "onnx_speedup_per_chunk": round(t / o, 3) if t and o else None,
                  "serve_torch_32_p95_ms": serve["torch"], "serve_onnx_32_p95_ms": serve["onnx"]}
    return res


def target_table(res: dict[str, dict[str, float | None]]) -> str:
    """Markdown: each target, its goal and each side's value."""
    out = ["| target | goal | ref | new |", "|---|---:|---:|---:|"]
    goals = {k: f"{'>=' if k in AT_LEAST else '<='} {v:g}" for k, v in TARGETS.items()}
    for key in ("encoder_ms_per_chunk", "encoder_vs_wenet", "torch_ms_per_chunk", "onnx_ms_per_chunk",
                "onnx_speedup_per_chunk", "serve_torch_32_p95_ms", "serve_onnx_32_p95_ms"):
        vals = [res[s][key] for s in SIDES]
        cells = " | ".join("-" if v is None else str(v) for v in vals)
        out.append(f"| {key} | {goals.get(key, '')} | {cells} |")
    return "\n".join(out) + "\n"


def summary(d: Path) -> str:
    out = ["| measure | ref | new | new / ref |", "|---|---:|---:|---:|"]
    enc = {s: _med([r["per_chunk_ms"] for r in _lines(d / f"encoder_small_ct1_{s}.jsonl")]) for s in SIDES}
    out.append(_row("small encoder, chunk 16, 1 thread, ms/chunk", enc["ref"], enc["new"]))
    wenet = WENET["small"]["per_chunk_ms"]
    vs = [f"{enc[s] / wenet:.3f}" if enc[s] else "-" for s in SIDES]
    out.append(f"| the same / WeNet's {wenet} ms/chunk | {vs[0]} | {vs[1]} | - |")
    lat = {s: _lines(d / f"latency_{s}.jsonl") for s in SIDES}
    for backend in ("torch", "onnx"):
        for key, label in (("per_chunk_compute_ms_median", "ms/chunk"), ("final_latency_wall_ms_median",
                                                                           "final ms")):
            vals = {s: _med([r[key] for r in lat[s] if r.get("backend") == backend]) for s in SIDES}
            out.append(_row(f"Recognizer {backend}, chunk 16, left 4, {label}", vals["ref"], vals["new"]))
    for s in SIDES:
        t = _med([r["per_chunk_compute_ms_median"] for r in lat[s] if r.get("backend") == "torch"])
        o = _med([r["per_chunk_compute_ms_median"] for r in lat[s] if r.get("backend") == "onnx"])
        if t and o:
            out.append(f"| {s}: ONNX speed-up over torch per chunk (torch ms / ONNX ms) | | | {t / o:.2f} |")
    for s_name in ("ctc_greedy", "attention_rescoring"):
        rtf: dict[str, dict[str, float]] = {}
        for s in SIDES:
            p = d / f"speed_rtf_{s}.json"
            runs = json.loads(p.read_text()).get("runs", []) if p.is_file() else []
            rtf[s] = {r["backend"]: r["rtf"] for r in runs if r.get("mode") == s_name}
        for backend in ("torch", "onnx"):
            out.append(_row(f"offline RTF {backend}, {s_name}, chunk 16 left 4",
                            rtf["ref"].get(backend), rtf["new"].get(backend)))
        for s in SIDES:
            t, o = rtf[s].get("torch"), rtf[s].get("onnx")
            if t and o:
                out.append(f"| {s}: offline ONNX speed-up over torch, {s_name} | | | {t / o:.2f} |")
    for backend in ("torch", "onnx"):
        levels: dict[str, dict[int, list[dict[str, Any]]]] = {s: {} for s in SIDES}
        for s in SIDES:
            for p in sorted(d.glob(f"serve_load_{backend}_{s}_rep*.json")):
                data = json.loads(p.read_text())
                for r in data.get("levels", data) if isinstance(data, dict) else data:
                    levels[s].setdefault(int(r["streams"]), []).append(r)
        for n in sorted(set(levels["ref"]) | set(levels["new"])):
            for key in ("final_latency_ms_p50", "final_latency_ms_p95", "rtf"):
                vals = {s: _med([r[key] for r in levels[s].get(n, [])]) for s in SIDES}
                out.append(_row(f"serve {backend}, {n} streams, {key}", vals["ref"], vals["new"]))
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", default="benchmarks/results/issue19", help="an ab.sh result dir")
    ap.add_argument("--json", help="also write the targets (per side) as JSON here")
    args = ap.parse_args()
    d = Path(args.dir)
    res = targets(d)
    print(summary(d) + "\n" + target_table(res), end="")
    if args.json:
        from qifusion.fileio import atomic_write_text

        doc = {"dir": str(d), "targets": TARGETS, "sides": res}
        atomic_write_text(args.json, json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
