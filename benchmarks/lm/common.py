"""Shared pieces of the LM benchmarks: encode a split once (cached), run a search config, score it.

Encoder outputs (CTC log-probs and decoder memory per utterance) do not depend on the search, so each
(model, split, chunk size) is encoded once and cached (``--cache``); every search setting then reuses
them. WER/CER use :mod:`qifusion.eval.metrics` like ``qifusion decode``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hashlib
import time
from pathlib import Path
from typing import Any

import torch

from qifusion.data.manifest import load_data_dir
from qifusion.decode.backend import load_for_decoding
from qifusion.decode.options import DEFAULT_BEAM, DEFAULT_CTC_WEIGHT, DecodeOptions
from qifusion.decode.run import load_feature_batch
from qifusion.decode.search import search_batch
from qifusion.eval.metrics import ErrorCounts, cer_counts, wer_counts


def encode_split(model_dir: Path, data_dir: Path, chunk_size: int, cache: Path | None,
                 limit: int | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """(loaded model, [{utt, ref, lp (T',V), mem (T',D), secs, enc_cpu}]) for ``data_dir``, cached.

    ``enc_cpu``: process CPU seconds of features + chunk-masked forward, per utterance (batch 16).
    """
    loaded = load_for_decoding(model_dir)
    key = hashlib.sha1(f"v2|{Path(model_dir).resolve()}|{Path(data_dir).resolve()}|{chunk_size}|{limit}"
                       .encode()).hexdigest()[:16]
    path = cache / f"enc-{key}.pt" if cache is not None else None
    if path is not None and path.is_file():
        return loaded, torch.load(path)
    utts = load_data_dir(data_dir, require_text=True)
    if limit:
        utts = utts[:limit]
    rows: list[dict[str, Any]] = []
    for i in range(0, len(utts), 16):
        t0 = time.process_time()
        feats, kept, _ = load_feature_batch(utts[i : i + 16], {}, sample_rate=loaded.config.data.sample_rate,
                                            num_mel_bins=loaded.config.data.num_mel_bins)
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
        lens = torch.tensor([f.shape[0] for f in feats])
        with torch.inference_mode():
            enc = loaded.model.encode(x, lens, chunk_size=chunk_size, left_chunks=-1)
        cpu = (time.process_time() - t0) / max(len(kept), 1)  # features + encoder, per utterance
        for j, u in enumerate(kept):
            n = int(enc.lens[j])
            rows.append({"utt": u.utt_id, "ref": u.text, "lp": enc.ctc_log_probs[j, :n].float().clone(),
                         "mem": enc.memory[j, :n].clone(), "secs": feats[j].shape[0] * 0.01, "enc_cpu": cpu})
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(rows, path)
    return loaded, rows


class _Enc:
    def __init__(self, row: dict[str, Any]) -> None:
        self.ctc_log_probs = row["lp"][None]
        self.memory = row["mem"][None]
        self.lens = torch.tensor([row["lp"].shape[0]])


def run_search(loaded: Any, rows: list[dict[str, Any]], *, mode: str, lm: Any = None,
               hotwords: tuple[Any, ...] | None = None, beam_size: int = DEFAULT_BEAM,
               ctc_weight: float = DEFAULT_CTC_WEIGHT) -> dict[str, Any]:
    """Decode cached ``rows`` with one search setting; CER/WER (%), search-only RTF and hypotheses."""
    tok = loaded.tokenizer
    options = DecodeOptions(mode=mode, beam_size=beam_size, ctc_weight=ctc_weight,
                            reverse_weight=loaded.config.model.reverse_weight, hotwords=hotwords)
    cer, wer = ErrorCounts(), ErrorCounts()
    hyps: dict[str, str] = {}
    secs = sum(r["secs"] for r in rows)
    t0 = time.process_time()
    for r in rows:
        with torch.inference_mode():
            h = search_batch(loaded.model, _Enc(r), options, sos_eos_id=tok.sos_eos_id, blank_id=tok.blank_id,
                             lm=lm)[0]
        text = tok.decode(h.tokens)
        hyps[r["utt"]] = text
        cer += cer_counts(r["ref"], text)
        wer += wer_counts(r["ref"], text)
    cpu = time.process_time() - t0
    return {"mode": mode, "cer": round(cer.rate, 2), "wer": round(wer.rate, 2), "utts": len(rows),
            "search_rtf": round(cpu / max(secs, 1e-9), 5), "hyps": hyps}
