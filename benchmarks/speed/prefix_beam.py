"""Vectorised CTC prefix beam search vs a straightforward per-frame Python loop.

Both use the same per-frame top-k token pruning and give the same n-best (checked here). The loop
reference lives in tests/ctc_reference.py. Peaky synthetic CTC posteriors (mostly blank, like a trained
model) of shape (B, T', V). Prints the time of each and the speed ratio.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speed/prefix_beam.py --batch 16 --frames 250 --vocab 500
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from ctc_reference import reference_prefix_beam

from qifusion.decode.ctc_search import ctc_prefix_beam


def peaky_log_probs(B: int, T: int, V: int, *, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 2.0
    logits[:, :, 0] += 6.0 * (torch.rand(B, T, generator=g) < 0.7)  # ~70 % blank-dominated frames
    return logits.log_softmax(-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=250, help="T' (250 = 10 s at 40 ms)")
    p.add_argument("--vocab", type=int, default=500)
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    lp = peaky_log_probs(a.batch, a.frames, a.vocab, seed=0)
    lens = torch.full((a.batch,), a.frames)
    t_vec, t_ref = [], []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        vec = ctc_prefix_beam(lp, lens, beam_size=a.beam)
        t_vec.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = [reference_prefix_beam(lp[b], beam_size=a.beam, token_topk=a.beam) for b in range(a.batch)]
        t_ref.append(time.perf_counter() - t0)
    same = all([h.tokens for h in v] == [r[0] for r in rs] for v, rs in zip(vec, ref))
    tv, tr = min(t_vec), min(t_ref)
    frames = a.batch * a.frames
    print(f"B={a.batch} T'={a.frames} V={a.vocab} beam={a.beam} topk={a.beam} "
          f"threads={torch.get_num_threads()}")
    print(f"vectorised: {tv * 1e3:8.1f} ms ({tv / frames * 1e6:6.1f} us/frame)")
    print(f"python loop: {tr * 1e3:8.1f} ms ({tr / frames * 1e6:6.1f} us/frame)")
    print(f"speed ratio (loop / vectorised): {tr / tv:.2f}x; same n-best: {same}")


if __name__ == "__main__":
    main()
