"""Encoder speed benchmark, shaped like the WeNet figures of the developers' guide.

Prints one JSON line ``{"train_step_s", "infer_10s_s", "stream_10s_s", "per_chunk_ms", "params_M"}``:

- ``train_step_s``: forward + backward + AdamW step of encoder + linear CTC head (CTC loss, random
  targets) on 8 x 1000 fbank frames (full context, dropout on); with ``--amp bf16`` the forward runs
  under a CPU bf16 autocast (as ``train.amp: bf16``).
- ``infer_10s_s``: 1 x 1000 frames (10 s), full context, inference mode.
- ``stream_10s_s`` / ``per_chunk_ms``: the same 10 s chunk by chunk (chunk 16 after sub-sampling, all
  history cached) through ``forward_chunk`` + CTC head; total and per chunk.
- ``params_M``: encoder parameters in millions (the CTC head is excluded: its size depends on the
  vocabulary).

Medians of a few repeats, 2 threads (``--threads``). ``--parts stream`` (comma list of train, infer,
stream) times only some parts; ``--profile`` prints a torch.profiler op table of one streaming pass
(to stderr: stdout stays one JSON line);
``--chunk-threads N`` runs each streaming chunk step with N intra-op threads (``torch.set_num_threads``
around the call; small per-chunk matrices often run faster on one thread than on two).
Example::

    .venv/bin/python -m benchmarks.speed.encoder --size small
    .venv/bin/python -m benchmarks.speed.encoder --size base --parts infer,stream --threads 1
    .venv/bin/python -m benchmarks.speed.encoder --size small --parts train --amp bf16
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the torch import

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from benchmarks.speed.speed_common import median_time
from qifusion.config import EncoderConfig
from qifusion.models.conformer import ConformerEncoder
from qifusion.models.geometry import ChunkGeometry

SIZES = {
    "small": {"output_size": 144, "attention_heads": 4, "linear_units": 576},
    "base": {"output_size": 256, "attention_heads": 4, "linear_units": 2048},
}


def run(
    size: str,
    *,
    threads: int,
    repeats: int,
    vocab: int,
    chunk: int,
    parts: set[str],
    profile: bool = False,
    chunk_threads: int = 0,
    amp: str = "none",
) -> dict[str, float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = EncoderConfig(num_blocks=12, cnn_module_kernel=15, causal=True, **SIZES[size])
    enc = ConformerEncoder(cfg)
    head = torch.nn.Linear(cfg.output_size, vocab)
    params = list(enc.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)

    B, T = 8, 1000
    feats = torch.randn(B, T, cfg.input_dim)
    lens = torch.full((B,), T, dtype=torch.long)
    targets = torch.randint(1, vocab, (B, 40))
    target_lens = torch.full((B,), 40, dtype=torch.long)

    def train_step() -> None:
        enc.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            o = enc(feats, lens, chunk_size=-1)
            logits = head(o.out)
        logp = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)
        out_lens = o.mask.sum(1)
        loss = F.ctc_loss(logp, targets, out_lens, target_lens, zero_infinity=True)
        loss.backward()
        opt.step()

    res: dict[str, float] = {}
    if "train" in parts:
        res["train_step_s"] = round(median_time(train_step, repeats)[0], 4)

    enc.eval()
    one = feats[:1]

    def infer() -> None:
        with torch.inference_mode():
            o = enc(one, lens[:1], chunk_size=-1)
            F.log_softmax(head(o.out), dim=-1)

    if "infer" in parts:
        res["infer_10s_s"] = round(median_time(infer, repeats + 2)[0], 4)

    geom = ChunkGeometry(chunk, -1, enc.subsampling_rate, enc.right_context)  # all history cached
    starts = [s for s in range(0, T, geom.stride) if geom.next_chunk(T - s, finished=True)]
    t_in = geom.window

    def stream() -> None:
        with torch.inference_mode():
            att, cnn = enc.init_cache(1)
            for s in starts:
                if chunk_threads > 0:
                    torch.set_num_threads(chunk_threads)
                out, _, att, cnn = enc.forward_chunk(one[:, s : s + t_in], 0, -1, att, cnn)
                F.log_softmax(head(out), dim=-1)
                if chunk_threads > 0:
                    torch.set_num_threads(threads)

    if "stream" in parts:
        stream_s = median_time(stream, repeats)[0]
        res["stream_10s_s"] = round(stream_s, 4)
        res["per_chunk_ms"] = round(1000 * stream_s / len(starts), 2)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CPU]) as p:
            stream()
        print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), file=sys.stderr)
    res["params_M"] = round(sum(p.numel() for p in enc.parameters()) / 1e6, 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=4233, help="CTC head size (WeNet AISHELL-1 units)")
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--parts", default="train,infer,stream", help="comma list of train, infer, stream")
    ap.add_argument("--profile", action="store_true", help="print an op table of one streaming pass")
    ap.add_argument("--chunk-threads", type=int, default=0, help="threads per chunk step (0 = --threads)")
    ap.add_argument("--amp", choices=("none", "bf16"), default="none", help="train step autocast")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= {"train", "infer", "stream"}:
        ap.error(f"--parts: unknown part(s) {sorted(parts - {'train', 'infer', 'stream'})}")
    res = run(
        args.size,
        threads=args.threads,
        repeats=args.repeats,
        vocab=args.vocab,
        chunk=args.chunk,
        parts=parts,
        profile=args.profile,
        chunk_threads=args.chunk_threads,
        amp=args.amp,
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
