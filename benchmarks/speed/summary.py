"""Markdown section of the speed study from the result files in ``benchmarks/results/``.

    from benchmarks.speed.summary import speed_markdown            # or load this file with importlib
    text = speed_markdown(Path("benchmarks/results"))
    python -m benchmarks.speed.summary [RESULTS_DIR]   # prints it

Standard library only (a report generator can import it cheaply). Every table names the command that
produced it (the ``command`` stored in the result file, else the one ``run_all.sh`` uses); a missing or
unreadable result file gives a line naming the command that makes it instead of a table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RUN_ALL = "benchmarks/speed/run_all.sh"
# The commands of run_all.sh (used when a result file does not record its own command line).
COMMANDS = {
    "encoder_small.json": "python -m benchmarks.speed.encoder --size small",
    "encoder_base.json": "python -m benchmarks.speed.encoder --size base",
    "encoder_small_ct1.json": "python -m benchmarks.speed.encoder --size small --chunk-threads 1 "
                              "--parts infer,stream",
    "encoder_base_ct1.json": "python -m benchmarks.speed.encoder --size base --chunk-threads 1 "
                             "--parts infer,stream",
    "speed_rtf.json": "python -m benchmarks.speed.rtf --model models/accents-en-qifusion "
                      "--onnx exp/speed/onnx --data data/benchmark/test "
                      "--out benchmarks/results/speed_rtf.json",
    "speed_train.json": "python -m benchmarks.speed.train_throughput "
                        "--out benchmarks/results/speed_train.json",
    "latency.jsonl": "python -m benchmarks.speed.latency --model models/accents-en-qifusion --chunk-size C "
                     "--wav WAV --threads 1  (one line per backend / chunk size)",
    "prefix_beam.json": "python -m benchmarks.speed.prefix_beam --out benchmarks/results/prefix_beam.json",
    "serve_load_torch.json": "python -m benchmarks.speed.serve_load --model models/accents-en-qifusion "
                             "--data exp/speed/test_subset --out benchmarks/results/serve_load_torch.json",
    "serve_load_onnx.json": "python -m benchmarks.speed.serve_load --model exp/speed/onnx --backend onnx "
                            "--data exp/speed/test_subset --out benchmarks/results/serve_load_onnx.json",
    "serve_load_onnx_int8.json": "python -m benchmarks.speed.serve_load --model exp/speed/onnx/int8 "
                                 "--backend onnx --data exp/speed/test_subset "
                                 "--out benchmarks/results/serve_load_onnx_int8.json",
}
# WeNet figures of the developers' guide (same shapes, 2 threads): train step s, 10 s full context s,
# chunk-16 ms per chunk.
WENET = {
    "small": {"train_step_s": 2.23, "infer_10s_s": 0.147, "per_chunk_ms": 39.5},
    "base": {"train_step_s": 5.99, "infer_10s_s": 0.326, "per_chunk_ms": 54.0},
}


# ------------------------------------------------------------------------------------ helpers
def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x == 0 or abs(x) >= 100:
            return f"{x:.1f}"
        if abs(x) >= 1:
            return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"
        return f"{x:.3g}"
    return str(x)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _load(path: Path) -> Any:
    """The JSON of ``path`` (a ``.jsonl`` file: a list of its lines); None when missing or unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            return [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        return json.loads(text)
    except (OSError, ValueError):
        return None


def _missing(name: str) -> str:
    return (f"_No result `{name}` yet: run `{COMMANDS[name]}` (or `{RUN_ALL}`, which runs every speed "
            "script and skips results that exist)._\n\n")


def _cmd(name: str, data: Any) -> str:
    cmd = data.get("command") if isinstance(data, dict) else None
    return f"Command: `{cmd or COMMANDS[name]}`\n"


def _section(title: str, name: str, results_dir: Path, body: Callable[[Any], str]) -> str:
    data = _load(results_dir / name)
    if not data:
        return f"### {title}\n\n{_missing(name)}"
    try:
        return f"### {title}\n\n{body(data)}"
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        return f"### {title}\n\n_`{name}` has an unexpected layout ({type(e).__name__}: {e}); rerun " \
               f"`{COMMANDS[name]}`._\n"


def _machine(m: dict[str, Any] | None) -> str:
    if not m:
        return ""
    return (f"Machine: {m.get('cpu_count')} CPUs ({m.get('cpu_model')}), torch {m.get('torch')}, "
            f"onnxruntime {m.get('onnxruntime')}, load average at start {m.get('loadavg_at_start')}.\n")


# ------------------------------------------------------------------------------------ sections
def _rtf(d: dict[str, Any]) -> str:
    threads = sorted({r["threads"] for r in d["runs"]})
    keys: dict[tuple[str, int, int, str], dict[int, dict[str, Any]]] = {}
    for r in d["runs"]:
        key = (r["backend"], r["chunk_size"], r.get("left_chunks", -1), r["mode"])
        keys.setdefault(key, {})[r["threads"]] = r
    rows = []
    for (backend, chunk, left, mode), by_t in keys.items():
        first = next(iter(by_t.values()))
        ctx = "full" if chunk < 0 else f"chunk {chunk}" + (f", left {left}" if left >= 0 else "")
        rows.append([backend, ctx, mode, *[by_t.get(t, {}).get("rtf") for t in threads], first.get("cer")])
    data = d.get("data", {})
    return (f"Offline decoding of {data.get('num_utts')} test utterances ({data.get('audio_s')} s of "
            f"audio, from `{data.get('source')}`), RTF = compute s per s of audio (audio reading + fbank + "
            f"encoder + search), median of {d.get('repeats')} runs; each backend x thread count in a fresh "
            "process. "
            "ONNX graphs are exported at one chunk size (no full-context ONNX rows).\n\n"
            + _table(["backend", "context", "mode", *[f"RTF {t} thr" for t in threads], "CER %"], rows)
            + "\n" + _machine(d.get("machine")) + _cmd("speed_rtf.json", d))


def _fbank(d: dict[str, Any]) -> str:
    rows = [[f["threads"], f.get("offline_audio_s_per_s"), f.get("online_audio_s_per_s"), f.get("audio_s")]
            for f in d["fbank"]]
    return ("kaldi-native-fbank via `qifusion.data.features` (80 bins), seconds of audio per second, "
            "median of runs; online = `OnlineFbank` fed 100 ms pieces.\n\n"
            + _table(["threads", "offline (s/s)", "online (s/s)", "audio s"], rows) + "\n"
            + _cmd("speed_rtf.json", d))


def _chunk(r: dict[str, Any]) -> str:
    left = r.get("left_chunks", -1)
    return f"{r['chunk_size']}" + (f" (left {left})" if left is not None and left >= 0 else "")


def _latency(rows: list[dict[str, Any]]) -> str:
    t1 = [[r.get("backend", "torch"), _chunk(r), r.get("chunk_audio_ms"),
           r.get("per_chunk_compute_ms_median"),
           r["per_chunk_compute_ms_median"] / r["chunk_audio_ms"] if r.get("chunk_audio_ms") else None,
           r.get("threads")] for r in rows]
    t2 = [[r.get("backend", "torch"), _chunk(r), r.get("first_partial_latency_audio_ms"),
           r.get("final_latency_wall_ms_median"), r.get("audio_s")] for r in rows]
    cmds = list(dict.fromkeys(r.get("command") or COMMANDS["latency.jsonl"] for r in rows))
    return ("#### Per-chunk compute vs chunk duration\n\nRecognizer (`ctc_prefix_beam` partials), one "
            "stream; compute/chunk < 1 keeps up with real time.\n\n"
            + _table(["backend", "chunk", "chunk audio ms", "compute ms/chunk (median)", "compute/chunk",
                      "threads"], t1)
            + "\n#### First-partial and final latency\n\nFirst partial: audio fed when the first token "
              "appears minus that token's time (ms of audio). Final: wall ms from end of input to the "
              "final (rescored) result.\n\n"
            + _table(["backend", "chunk", "first partial (audio ms)", "final (wall ms)", "utterance s"], t2)
            + "\nCommands:\n" + "".join(f"- `{c}`\n" for c in cmds))


def _serve(results_dir: Path) -> str:
    out = "### Server load (`qifusion serve`, real-time streams)\n\n"
    for name in ("serve_load_torch.json", "serve_load_onnx.json", "serve_load_onnx_int8.json"):
        d = _load(results_dir / name)
        label = name.removeprefix("serve_load_").removesuffix(".json")
        if not d:
            out += f"{label}: " + _missing(name) + "\n"
            continue
        rows = [[lv["streams"], lv.get("final_latency_ms_p50"), lv.get("final_latency_ms_p95"), lv.get("rtf"),
                 lv.get("realtime_ok")] for lv in d.get("levels", [])]
        out += (f"**{label}** (chunk {d.get('chunk_size')})\n\n"
                + _table(["streams", "final p50 ms", "final p95 ms", "server RTF", "real time"], rows)
                + "\n" + _cmd(name, d) + "\n")
    return out


def _train(d: dict[str, Any]) -> str:
    rows = [[" ".join([Path(r["config"]).stem, *r.get("overrides", [])]), r["threads"], r["audio_per_s"],
             r.get("audio_per_s_with_loading"),
             r.get("step_s_median"), r.get("batch_audio_s_median"), r.get("steps"), r.get("peak_rss_mb")]
            for r in d["runs"]]
    return ("Trainer steps (forward + backward + clip + optimizer) on real training batches; seconds of "
            "audio per second, median over the steps after warm-up; *with loading* adds batch preparation "
            "(audio, augmentation, fbank) done in the same process.\n\n"
            + _table(["config", "threads", "audio s/s", "with loading", "step s", "batch audio s", "steps",
                      "peak RSS MiB"], rows)
            + "\n" + _machine(d.get("machine")) + _cmd("speed_train.json", d))


def _prefix_beam(d: dict[str, Any]) -> str:
    batch_rows = [[r["dist"], r["batch"], "off" if r.get("floor") is None else "log 1e-3", r["vectorised_ms"],
                   r["loop_ms"], r["ratio_loop_over_vectorised"], r.get("same_nbest")]
                  for r in d["results"] if r.get("mode") != "streaming"]
    stream_rows = [[r["dist"], r["chunk"], r["streaming_ms"], r["loop_ms"], r["ratio_loop_over_streaming"],
                    r.get("same_nbest")] for r in d["results"] if r.get("mode") == "streaming"]
    first = d["results"][0] if d["results"] else {}
    return (f"Vectorised CTC prefix beam search vs a per-frame Python loop, {first.get('frames')} frames, "
            f"vocabulary {first.get('vocab')}, beam {first.get('beam')}, {d.get('threads')} thread(s), "
            f"{d.get('timing', 'best of runs')}; speed-up = loop / vectorised.\n\n"
            + _table(["dist", "batch", "floor", "vectorised ms", "loop ms", "speed-up", "same n-best"],
                     batch_rows)
            + ("\nStreaming (16-frame chunks, best hypothesis read after each):\n\n"
               + _table(["dist", "chunk", "streaming ms", "loop ms", "speed-up", "same n-best"], stream_rows)
               if stream_rows else "")
            + "\n" + _cmd("prefix_beam.json", d))


def _memory(results_dir: Path) -> str:
    rows = []
    rtf = _load(results_dir / "speed_rtf.json")
    if isinstance(rtf, dict):
        rows += [[m.get("what"), m.get("threads"), m.get("peak_rss_mb")] for m in rtf.get("memory", [])]
    train = _load(results_dir / "speed_train.json")
    if isinstance(train, dict):
        rows += [[f"train {Path(str(r.get('config'))).stem}", r.get("threads"), r.get("peak_rss_mb")]
                 for r in train.get("runs", [])]
    head = "### Peak memory\n\n"
    if not rows:
        return head + _missing("speed_rtf.json") + _missing("speed_train.json")
    return (head + "Peak RSS (`getrusage` max RSS) of each measuring process (model load, decode or train "
            "included).\n\n" + _table(["process", "threads", "peak RSS MiB"], rows))


def _stream_ratio_rows(size: str, d: dict, label: str) -> list[list]:
    """Whole-utterance streaming time / full-context time, ours and WeNet's (same number of chunks)."""
    st, full, pc = d.get("stream_10s_s"), d.get("infer_10s_s"), d.get("per_chunk_ms")
    if not all(isinstance(v, int | float) and v > 0 for v in (st, full, pc)):
        return []
    chunks = st * 1000.0 / pc
    ref = WENET[size]["per_chunk_ms"] * chunks / 1000.0 / WENET[size]["infer_10s_s"]
    return [[size, f"streaming / full context ({label})", round(st / full, 2), round(ref, 2), None]]


def _encoder(results_dir: Path) -> str:
    out = ("### Encoder vs WeNet (developers' guide shapes)\n\n12-block Conformer + linear CTC head, "
           "2 threads: train step = fwd+bwd+AdamW on 8 x 1000 frames; full = 1 x 1000 frames (10 s); "
           "chunk 16 = the same 10 s chunk by chunk with caches. Ratio = ours / WeNet (< 1: faster).\n\n")
    rows = []
    for size in ("small", "base"):
        name = f"encoder_{size}.json"
        d = _load(results_dir / name)
        ct1 = _load(results_dir / f"encoder_{size}_ct1.json")
        if not isinstance(ct1, dict):
            out += _missing(f"encoder_{size}_ct1.json")
        if not isinstance(d, dict):
            out += _missing(name)
            continue
        for key, label in (("train_step_s", "train step s"), ("infer_10s_s", "full context 10 s, s"),
                           ("per_chunk_ms", "chunk 16, ms/chunk")):
            ours, ref = d.get(key), WENET[size][key]
            rows.append([size, label, ours, ref, ours / ref if isinstance(ours, int | float) else None])
        rows.append([size, "chunk 16, whole 10 s, s", d.get("stream_10s_s"), None, None])
        rows += _stream_ratio_rows(size, d, "2 threads")
        if isinstance(ct1, dict):  # how the Recognizer runs chunk steps (chunk_threads=1): compared too
            ours, ref = ct1.get("per_chunk_ms"), WENET[size]["per_chunk_ms"]
            rows.append([size, "chunk 16, 1 thread per chunk step (Recognizer default), ms/chunk", ours, ref,
                         ours / ref if isinstance(ours, int | float) else None])
            rows += _stream_ratio_rows(size, ct1, "1 thread per chunk step")
        rows.append([size, "encoder params M", d.get("params_M"), None, None])
    if rows:
        out += _table(["size", "measure", "ours", "WeNet", "ratio"], rows)
        names = [f"encoder_{s}{v}.json" for v in ("", "_ct1") for s in ("small", "base")]
        out += "\nCommands: `" + "`, `".join(COMMANDS[n] for n in names) + "`\n"
    return out


def speed_markdown(results_dir: Path) -> str:
    """The speed study as a Markdown section (``## Speed``) built from the JSON results in ``results_dir``."""
    results_dir = Path(results_dir)
    parts = [
        "## Speed\n\nMedians of repeated runs on this machine; regenerate with "
        f"`{RUN_ALL}` (skips results that exist; `--force` remeasures).\n",
        _section("Offline decoding RTF (backend x threads x mode)", "speed_rtf.json", results_dir, _rtf),
        _section("Streaming latency", "latency.jsonl", results_dir, _latency),
        _serve(results_dir),
        _section("Training throughput", "speed_train.json", results_dir, _train),
        _section("Feature extraction", "speed_rtf.json", results_dir, _fbank),
        _section("CTC prefix beam search", "prefix_beam.json", results_dir, _prefix_beam),
        _memory(results_dir),
        _encoder(results_dir),
    ]
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


if __name__ == "__main__":
    print(speed_markdown(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results")))
