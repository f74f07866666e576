"""Accent identification (AID) decoder: frame-level accent posteriors from the accent embedding.

Training: cross-entropy of every valid frame against its utterance's accent label, averaged over the
valid frames of labelled utterances (padding and unlabelled utterances, accent -1, never count).
Prediction: argmax of the frame posteriors averaged over valid frames. While streaming, the running
estimate is the same average over the frames seen so far (sum and count are kept in the stream state),
so the final streaming estimate equals the offline one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qifusion.config import AccentConfig


class AccentClassifier(nn.Module):
    """Per-frame accent logits: (B,T',E) -> (B,T',A); optional hidden ReLU layer."""

    def __init__(self, cfg: AccentConfig, num_accents: int) -> None:
        super().__init__()
        if cfg.aid_hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(cfg.embed_dim, cfg.aid_hidden),
                nn.ReLU(),
                nn.Dropout(cfg.dropout_rate),
                nn.Linear(cfg.aid_hidden, num_accents),
            )
        else:
            self.net = nn.Linear(cfg.embed_dim, num_accents)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """Frame logits (B,T',A)."""
        return self.net(emb)


def aid_loss(logits: torch.Tensor, mask: torch.Tensor, accents: torch.Tensor) -> torch.Tensor | None:
    """Frame-level CE against the utterance label, mean over valid frames of labelled utterances.

    Args:
        logits: (B,T',A) frame logits. mask: (B,T') bool valid frames. accents: (B,) ids, -1 unknown.
    Returns:
        scalar loss, or ``None`` when no utterance in the batch is labelled.
    """
    frame_ok = mask & (accents >= 0).unsqueeze(1)
    n = frame_ok.sum()
    if int(n) == 0:
        return None
    target = accents.clamp(min=0).unsqueeze(1).expand_as(mask)
    ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B,T')
    return (ce * frame_ok.to(ce.dtype)).sum() / n


def utterance_posterior(post: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of frame posteriors (B,T',A) over valid frames (mask (B,T')) -> (B,A)."""
    m = mask.to(post.dtype).unsqueeze(-1)
    return (post * m).sum(1) / m.sum(1).clamp(min=1.0)


def aid_accuracy(utt_post: torch.Tensor, accents: torch.Tensor) -> torch.Tensor | None:
    """Fraction of labelled utterances whose argmax posterior equals the label (None if none)."""
    ok = accents >= 0
    if int(ok.sum()) == 0:
        return None
    return (utt_post.argmax(-1)[ok] == accents[ok]).to(utt_post.dtype).mean()
