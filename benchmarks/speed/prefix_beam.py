"""Vectorised CTC prefix beam search vs a straightforward per-frame Python loop; prints JSON.

Both use the same per-frame pruning (``token_topk`` tokens, then those below ``token_min_logp``
dropped, the frame's best kept) and give the same n-best (tokens, times; checked and reported as
``same_nbest``). The loop is ``qifusion/decode/ctc_reference.py``. Inputs (B, T', V):

* ``peaky``: softmax of N(0, 2^2) logits where ~70 % of frames get a blank bonus that makes them
  > 99.9 % blank and the others a dominant random token (plus some blank), like a trained CTC model,
* ``uniform``: softmax of N(0, 2^2) logits, no dominant token (the worst case for the search).

Each (distribution, batch) is timed with the default floor (log 1e-3) and with the floor off (top-k
only, ``floor: null``); ``mode: streaming`` rows feed one utterance to the streaming state in 16-frame
chunks, reading the best hypothesis after each. Prints the JSON (with the command); ``--out`` also
writes it (atomically). Example (one thread; ~1 min):

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.speed.prefix_beam --batch 1 16 64 --frames 250 \
        --out benchmarks/results/prefix_beam.json
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from benchmarks.speed.speed_common import command_line, median_time
from qifusion.decode.ctc_reference import reference_prefix_beam
from qifusion.decode.ctc_search import ctc_prefix_beam
from qifusion.decode.options import DEFAULT_BEAM
from qifusion.decode.streaming_search import CtcPrefixBeamState
from qifusion.fileio import atomic_write_text


def make_log_probs(dist: str, B: int, T: int, V: int, *, seed: int) -> torch.Tensor:
    """(B, T, V) log-probabilities of the named synthetic distribution."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 2.0
    if dist == "peaky":
        blank = torch.rand(B, T, generator=g) < 0.7
        logits[:, :, 0] += torch.where(blank, 20.0, 4.0)  # > 99.9 % blank, or some blank mass
        spike = torch.randint(1, V, (B, T, 1), generator=g)  # other frames: one token dominates
        logits.scatter_add_(2, spike, torch.where(blank, 0.0, 9.0)[..., None])
    return logits.log_softmax(-1)


def measure(dist: str, B: int, T: int, V: int, *, beam: int, floor: float | None, repeat: int) -> dict:
    lp = make_log_probs(dist, B, T, V, seed=B)
    lens = torch.full((B,), T)
    t_vec, vec = median_time(lambda: ctc_prefix_beam(lp, lens, beam_size=beam, token_min_logp=floor), repeat)
    t_ref, ref = median_time(lambda: [reference_prefix_beam(lp[b], beam_size=beam, token_topk=beam,
                                                           token_min_logp=floor) for b in range(B)], repeat)
    same = all([(h.tokens, h.times) for h in v] == [(r[0], r[2]) for r in rs] for v, rs in zip(vec, ref))
    blank_frac = float((lp[..., 0] > math.log(0.999)).float().mean())
    return {"dist": dist, "batch": B, "frames": T, "vocab": V, "beam": beam, "topk": beam,
            "floor": floor, "frac_blank_gt_0.999": round(blank_frac, 3),
            "vectorised_ms": round(t_vec * 1e3, 2), "loop_ms": round(t_ref * 1e3, 2),
            "vectorised_us_per_frame": round(t_vec / (B * T) * 1e6, 2),
            "ratio_loop_over_vectorised": round(t_ref / t_vec, 2), "same_nbest": same}


def measure_streaming(dist: str, T: int, V: int, *, beam: int, chunk: int, repeat: int) -> dict:
    """One stream fed ``chunk`` frames at a time, reading the best hypothesis after each (as the
    Recognizer does), against the loop over the whole utterance."""
    lp = make_log_probs(dist, 1, T, V, seed=1)[0]

    def run() -> list:
        state = CtcPrefixBeamState(beam_size=beam)
        for a in range(0, T, chunk):
            state.step(lp[a : a + chunk])
            state.nbest(1)
        return state.nbest()

    t_inc, inc = median_time(run, repeat)
    t_ref, ref = median_time(lambda: reference_prefix_beam(lp, beam_size=beam, token_topk=beam,
                                                          token_min_logp=math.log(1e-3)), repeat)
    return {"dist": dist, "mode": "streaming", "chunk": chunk, "frames": T, "vocab": V, "beam": beam,
            "streaming_ms": round(t_inc * 1e3, 2), "loop_ms": round(t_ref * 1e3, 2),
            "ratio_loop_over_streaming": round(t_ref / t_inc, 2),
            "same_nbest": [(h.tokens, h.times) for h in inc] == [(r[0], r[2]) for r in ref]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--dist", nargs="+", default=["peaky", "uniform"], choices=["peaky", "uniform"])
    p.add_argument("--frames", type=int, default=250, help="T' (250 = 10 s at 40 ms)")
    p.add_argument("--vocab", type=int, default=500)
    p.add_argument("--beam", type=int, default=DEFAULT_BEAM)
    p.add_argument("--repeat", type=int, default=3, help="each time is the median of this many runs")
    p.add_argument("--out", default=None, help="also write the JSON here")
    a = p.parse_args()
    rows = [measure(d, B, a.frames, a.vocab, beam=a.beam, floor=floor, repeat=a.repeat)
            for d in a.dist for B in a.batch for floor in (math.log(1e-3), None)]
    rows += [measure_streaming(d, a.frames, a.vocab, beam=a.beam, chunk=16, repeat=a.repeat) for d in a.dist]
    text = json.dumps({"command": command_line(), "threads": torch.get_num_threads(),
                       "timing": f"median of {a.repeat} after a warm-up", "results": rows}, indent=1)
    print(text)
    if a.out:
        atomic_write_text(a.out, text + "\n")


if __name__ == "__main__":
    main()
