"""How soon does the streaming accent decision settle? (issue 17)

    python -m benchmarks.accent_latency exp/recipe/RUN/final data/benchmark/dev --chunk 16 \
        --out benchmarks/results/recipe/accent_latency/RUN.json

Each utterance is streamed through :class:`qifusion.decode.recognizer.Recognizer` (torch, greedy CTC,
``--chunk`` output frames per chunk) and the running accent (``StreamResult.accent``: the model's
pooled accent posterior over the frames seen so far) is read after every chunk. Reported:

- accuracy of the running accent after 0.5, 1, 2 and 3 s of audio (an utterance shorter than that
  counts with its final decision) and at the end of the utterance;
- *settling time*: the audio time after which the running decision never changes again (median, p90),
  and the share of utterances whose decision settles within 1 s and within 2 s;
- the same settling time restricted to utterances whose final decision is right.

Dev only (never the test split). One thread, as a single real-time stream would run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINTS_S = (0.5, 1.0, 2.0, 3.0)


Trace = list[tuple[float, str | None]]  # (seconds of audio decoded, running accent) after each chunk


def trace(rec: Any, samples: np.ndarray, sample_rate: int, *, piece_s: float) -> Trace:
    """Stream ``samples`` through ``rec``; (seconds of audio decoded, running accent) after each chunk."""
    s = rec.create_stream()
    step = max(1, int(piece_s * sample_rate))
    out: Trace = []
    fbank_shift = rec.frame_shift / rec.geometry.subsampling  # seconds per fbank frame

    def drain() -> None:
        while rec.is_ready(s):
            rec.decode(s)
            res = s.result
            out.append((s.next_frame * fbank_shift, res.accent))

    for i in range(0, len(samples), step):
        s.accept_waveform(sample_rate, samples[i:i + step])
        drain()
    s.input_finished()
    drain()
    return out


def settle_time(points: Trace) -> float:
    """Seconds of audio decoded when the running accent became the final one for good."""
    if not points:
        return float("nan")
    final = points[-1][1]
    i = len(points) - 1
    while i > 0 and points[i - 1][1] == final:
        i -= 1
    return points[i][0]


def accent_at(points: Trace, sec: float) -> str | None:
    """The running accent after ``sec`` seconds (the last decision at or before it; the first chunk's
    decision when no chunk ended yet; the final one for a shorter utterance)."""
    before = [a for t, a in points if t <= sec + 1e-9]
    return before[-1] if before else points[0][1]


def measure(model_dir: Path, data_dir: Path, *, chunk: int, limit: int = 0) -> dict[str, Any]:
    import torch

    from qifusion.data.audio import read_audio
    from qifusion.data.manifest import load_data_dir
    from qifusion.decode.recognizer import Recognizer

    torch.set_num_threads(1)
    rec = Recognizer.from_model_dir(model_dir, chunk_size=chunk, mode="ctc_greedy", rescore=False)
    utts = load_data_dir(data_dir)
    if limit:
        utts = utts[:limit]
    piece_s = chunk * rec.frame_shift
    rows = []
    for u in utts:
        samples = read_audio(u.audio, start=u.start, end=u.end, utt_id=u.utt_id)
        pts = trace(rec, np.asarray(samples, dtype=np.float32), 16000, piece_s=piece_s)
        if not pts:
            continue
        rows.append({"utt": u.utt_id, "accent": u.accent, "final": pts[-1][1], "settle_s": settle_time(pts),
                     **{f"at_{t}": accent_at(pts, t) for t in CHECKPOINTS_S}})
    n = len(rows)
    result: dict[str, Any] = {"model_dir": str(model_dir), "data_dir": str(data_dir), "chunk": chunk,
                              "chunk_seconds": piece_s, "utterances": n}
    if not n:
        return result
    settle = np.array([r["settle_s"] for r in rows])
    right = np.array([r["final"] == r["accent"] for r in rows])
    result |= {
        "accuracy_final": float(right.mean()),
        "accuracy_at": {str(t): float(np.mean([r[f"at_{t}"] == r["accent"] for r in rows]))
                        for t in CHECKPOINTS_S},
        "settle_s_median": float(np.median(settle)),
        "settle_s_p90": float(np.percentile(settle, 90)),
        "settled_within_1s": float(np.mean(settle <= 1.0)),
        "settled_within_2s": float(np.mean(settle <= 2.0)),
        "settle_s_median_correct": float(np.median(settle[right])) if right.any() else None,
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--chunk", type=int, default=16, help="output frames per chunk")
    ap.add_argument("--limit", type=int, default=0, help="first N utterances only (0: all)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from qifusion.fileio import atomic_write_text

    res = measure(args.model_dir, args.data_dir, chunk=args.chunk, limit=args.limit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
