"""Which encoder blocks carry accent: a linear probe on each block's mean-pooled output.

For every block b, the utterance vector is the mean of the block's output over valid frames (B, D);
a multinomial logistic regression (L2, LBFGS) is fitted on the dev speakers and scored on the test
speakers, so the accuracy measures accent information that generalises to unseen voices. This answers
the paper's open question (which layers to fuse) from data, for any trained model (baseline included).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from qifusion.config import Config
from qifusion.data.manifest import Utterance, load_data_dir
from qifusion.decode.run import load_feature_batch


def batches(utts: list[Utterance], *, sample_rate: int, num_mel_bins: int, batch_size: int = 16,
            skipped: dict[str, int] | None = None,
            ) -> Iterator[tuple[list[torch.Tensor], list[Utterance], torch.Tensor, torch.Tensor]]:
    """Readable utterances in batches: (fbank list (T, F), kept utterances, padded (B, T, F), lens (B,));
    unreadable or too short ones are counted in ``skipped``."""
    skipped = {} if skipped is None else skipped
    for i in range(0, len(utts), batch_size):
        feats, kept, _ = load_feature_batch(utts[i : i + batch_size], skipped, sample_rate=sample_rate,
                                            num_mel_bins=num_mel_bins)
        if kept:
            lens = torch.tensor([f.shape[0] for f in feats])
            yield feats, kept, torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lens


@torch.no_grad()
def encoded(model: torch.nn.Module, utts: list[Utterance], *, sample_rate: int, num_mel_bins: int,
            batch_size: int = 16,
            ) -> Iterator[tuple[list[torch.Tensor], list[Utterance], torch.Tensor, torch.Tensor, Any]]:
    """:func:`batches` with the full-context encoder pass of each: (fbank list (T, F), kept utterances,
    padded (B, T, F), lens (B,), the ``EncoderOutput``: ``hidden`` blocks (B, T', D), ``mask`` (B, T'))."""
    for feats, kept, x, lens in batches(utts, sample_rate=sample_rate, num_mel_bins=num_mel_bins,
                                        batch_size=batch_size):
        yield feats, kept, x, lens, model.encoder(x, lens, chunk_size=-1, left_chunks=-1)


def masked_mean(h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames: h (B, T, D), m (B, T, 1) 0/1 -> (B, D)."""
    return (h * m).sum(1) / m.sum(1)


def pooled_blocks(model: torch.nn.Module, data_dir: Path, *, config: Config, accents: list[str],
                  batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled output of every encoder block: features (N, blocks, D) and accent ids (N,)."""
    utts = [u for u in load_data_dir(data_dir) if u.accent in accents]
    feats_all, labels = [], []
    for _, kept, x, _, eo in encoded(model, utts, sample_rate=config.data.sample_rate,
                                  num_mel_bins=config.data.num_mel_bins, batch_size=batch_size):
        m = eo.mask.unsqueeze(-1).to(x.dtype)  # (B, T', 1)
        feats_all.append(torch.stack([masked_mean(h, m) for h in eo.hidden], dim=1).float())  # (B, blocks, D)
        labels += [accents.index(u.accent) for u in kept]
    return torch.cat(feats_all), torch.tensor(labels)


def fit_logreg(x: torch.Tensor, y: torch.Tensor, *, num_classes: int, l2: float = 1e-3,
               iters: int = 200) -> torch.nn.Linear:
    """Multinomial logistic regression on standardised x (N, D) -> a Linear layer (standardisation folded)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    lin = torch.nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(z), y) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():  # fold the standardisation into the layer
        w = lin.weight / std
        lin.bias -= (w * mean).sum(1)
        lin.weight.copy_(w)
    return lin


def block_probe(model: torch.nn.Module, *, config: Config, accents: list[str], train_dir: Path,
                test_dir: Path) -> dict[str, Any]:
    """Test-speaker accent accuracy of a linear probe on each block: {"blocks": [1..N], "acc": [...]}."""
    xtr, ytr = pooled_blocks(model, train_dir, config=config, accents=accents)
    xte, yte = pooled_blocks(model, test_dir, config=config, accents=accents)
    acc = []
    for b in range(xtr.shape[1]):
        lin = fit_logreg(xtr[:, b], ytr, num_classes=len(accents))
        with torch.no_grad():
            acc.append(round(float((lin(xte[:, b]).argmax(-1) == yte).float().mean()), 4))
    return {"blocks": list(range(1, xtr.shape[1] + 1)), "acc": acc, "train": str(train_dir.name),
            "test": str(test_dir.name), "n_train": int(ytr.numel()), "n_test": int(yte.numel())}
