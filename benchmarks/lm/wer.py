"""WER/CER with and without the word LM on a split, full context and chunked, plus LM search speed.

    python -m benchmarks.lm.wer --model models/accents-en-qifusion \\
        --data data/benchmark/test --lm /tmp/lm_train --chunk-sizes=-1,16 \\
        --out benchmarks/results/lm_wer_test.json

Rows per chunk size: ``attention_rescoring`` (no LM, the shipped default), ``ctc_prefix_beam``,
``lm_beam`` and ``lm_rescoring`` with :class:`~qifusion.decode.options.LmOptions` defaults (tuned on
dev by ``tune.py``). ``rel_wer_vs_attention_rescoring`` is the relative WER change. RTF at one thread
(process CPU time / audio seconds): ``encoder_rtf`` (chunk-masked forward of the whole split, batch 16)
and ``search_rtf`` (the search alone); ``rtf`` = their sum. ``peak_rss_mb``: the process's peak RSS.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import resource
import sys
from pathlib import Path

import torch

from benchmarks.lm.common import encode_split, run_search
from qifusion.decode.lm_search import LexiconLm
from qifusion.decode.options import LmOptions
from qifusion.fileio import atomic_write_text
from qifusion.lm.files import read_meta

MODES = ("attention_rescoring", "ctc_prefix_beam", "lm_beam", "lm_rescoring")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--lm", type=Path, required=True)
    ap.add_argument("--chunk-sizes", default="-1,16")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qifusion-lm-bench"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    loaded, rows_out = None, []
    opts = LmOptions()
    for chunk in map(int, a.chunk_sizes.split(",")):
        loaded, utts = encode_split(a.model, a.data, chunk, a.cache, a.limit)
        lm = LexiconLm(a.lm, loaded.tokenizer, opts)
        secs = sum(u["secs"] for u in utts)
        enc_rtf = sum(u.get("enc_cpu", 0.0) for u in utts) / secs
        base = None
        for mode in a.modes.split(","):
            r = run_search(loaded, utts, mode=mode, lm=lm if mode.startswith("lm_") else None)
            r.pop("hyps")
            r.update(chunk_size=chunk, encoder_rtf=round(enc_rtf, 5), rtf=round(enc_rtf + r["search_rtf"], 5))
            if mode == "attention_rescoring":
                base = r["wer"]
            if base is not None:
                r["rel_wer_vs_attention_rescoring"] = round((r["wer"] - base) / base, 4)
            rows_out.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    res = {"model": str(a.model), "data": str(a.data), "lm": str(a.lm), "lm_meta": read_meta(a.lm),
           "lm_options": opts.__dict__, "threads": 1, "torch": torch.__version__,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "rows": rows_out}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
