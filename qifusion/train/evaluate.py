"""Dev-set metrics during training: loss, CER by greedy CTC, and accent-ID accuracy.

Each rank evaluates its shard of the dev loader; sums are all-reduced, so every rank gets the same
numbers. CER counts characters without spaces (``▁`` word boundaries are removed too).
"""

from __future__ import annotations

from typing import Any

import editdistance
import torch

from qifusion.train.ddp import DistInfo, all_reduce


def greedy_ctc_ids(log_probs: torch.Tensor, lens: torch.Tensor, *, blank_id: int = 0) -> list[list[int]]:
    """Best path of ``log_probs (B,T',V)`` with repeats merged and blanks removed (valid ``lens`` frames)."""
    best = log_probs.argmax(dim=-1).cpu()
    out = []
    for row, n in zip(best.tolist(), lens.cpu().tolist()):
        ids, prev = [], -1
        for t in row[: int(n)]:
            if t != prev and t != blank_id:
                ids.append(t)
            prev = t
        out.append(ids)
    return out


def _chars(text: str) -> list[str]:
    return [c for c in text if not c.isspace() and c != "▁"]


def evaluate_dev(
    model: torch.nn.Module, loader: Any, *, tokenizer: Any, dist_info: DistInfo
) -> dict[str, float]:
    """``{"dev_loss", "dev_cer" (percent), "dev_aid_acc" (0..1, when the model has an AID head)}``.

    ``model`` is the unwrapped (non-DDP) model in eval mode; ``loader`` yields ``Batch`` objects.
    """
    dev = dist_info.device
    loss_sum = utts = err = chars = aid_ok = aid_n = 0.0
    for batch in loader:
        if batch.feats.shape[0] == 0:
            continue
        feats, lens = batch.feats.to(dev), batch.feats_lens.to(dev)
        tokens, token_lens, accents = batch.tokens.to(dev), batch.token_lens.to(dev), batch.accents.to(dev)
        out = model(feats, lens, tokens, token_lens, accents)
        b = feats.shape[0]
        loss_sum += float(out["loss"]) * b
        utts += b
        enc = model.encode(feats, lens, chunk_size=-1, accents=accents)
        hyps = greedy_ctc_ids(enc.ctc_log_probs, enc.lens, blank_id=tokenizer.blank_id)
        for i, hyp in enumerate(hyps):
            ref_ids = [t for t in tokens[i, : int(token_lens[i])].tolist() if t >= 0]
            ref = _chars(tokenizer.decode(ref_ids))
            err += editdistance.eval(ref, _chars(tokenizer.decode(hyp)))
            chars += len(ref)
        if enc.accent_utt is not None:
            known = accents >= 0
            aid_ok += float((enc.accent_utt.argmax(-1)[known] == accents[known]).sum())
            aid_n += float(known.sum())
    loss_sum, utts, err, chars, aid_ok, aid_n = all_reduce(
        dist_info, [loss_sum, utts, err, chars, aid_ok, aid_n], op="sum"
    )
    if utts == 0:
        return {}
    metrics = {"dev_loss": loss_sum / utts, "dev_cer": 100.0 * err / max(chars, 1.0)}
    if aid_n > 0:
        metrics["dev_aid_acc"] = aid_ok / aid_n
    return metrics
