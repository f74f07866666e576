"""Dev-set metrics during training: loss, CER by greedy CTC, and accent-ID accuracy.

The CER is the one ``qifusion decode --mode ctc_greedy`` reports: the same search
(:func:`qifusion.decode.ctc_search.ctc_greedy`) and the same metric and text normalisation
(:func:`qifusion.eval.metrics.cer_counts`). Each rank evaluates its shard of the dev loader; sums are
all-reduced, so every rank gets the same numbers.
"""

from __future__ import annotations

from typing import Any

import torch

from qifusion.decode.ctc_search import ctc_greedy
from qifusion.eval.metrics import cer_counts
from qifusion.train.ddp import DistInfo, all_reduce


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
        hyps = ctc_greedy(enc.ctc_log_probs, enc.lens, blank_id=tokenizer.blank_id)
        for i, hyp in enumerate(hyps):
            ref_ids = [t for t in tokens[i, : int(token_lens[i])].tolist() if t >= 0]
            counts = cer_counts(tokenizer.decode(ref_ids), tokenizer.decode(list(hyp.tokens)))
            err += counts.errors
            chars += counts.ref_len
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
