"""Accent identification (AID) decoder: frame-level accent posteriors from the accent embedding.

Training: cross-entropy of every valid frame against its utterance's accent label, averaged over the
valid frames of labelled utterances (padding and unlabelled utterances, accent -1, never count).
With ``model.accent.aid_balanced`` the loss is logit-adjusted (Menon et al., 2021, "Long-tail learning
via logit adjustment"): the training prior's log is added to the logits inside the loss only, so the
logits themselves estimate class-balanced posteriors. With an imbalanced corpus (40% en-us in the
benchmark), plain cross-entropy lets every frame without accent evidence output the prior, and the mean
of frame posteriors then names the majority accent for every input; balanced frames without evidence
are near uniform and leave the decision to the frames that have it.
Prediction (``model.accent.aid_pooling``):

* ``posterior`` (the paper's frame-level AID): the mean of the frame posteriors over valid frames;
* ``logit``: the softmax of the mean frame logits, i.e. a linear classifier on the mean-pooled accent
  embedding (an utterance-level decision from pooled statistics, as x-vector heads pool). Its training
  adds an utterance-level cross-entropy on the mean logits to the frame-level one, so the accent embedding
  gets an utterance-level signal. Computed as the softmax of the mean frame *log*-posteriors, which is
  the same distribution (the per-frame log-normaliser is a constant over classes).

While streaming, the running estimate sums the same per-frame evidence (posteriors or log-posteriors)
over the frames seen so far (sum and count are kept in the stream state), so the final streaming
estimate equals the offline one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qifusion.config import AccentConfig

AID_POOLINGS = ("posterior", "logit")
LOG_FLOOR = 1e-30  # posteriors are floored here before the log of logit pooling (torch and ONNX alike)


class AccentClassifier(nn.Module):
    """Per-frame accent logits: (B,T',E) -> (B,T',A); optional hidden ReLU layer."""

    def __init__(self, cfg: AccentConfig, num_accents: int) -> None:
        super().__init__()
        self.balanced = cfg.aid_balanced
        self.pooling = cfg.aid_pooling
        # log class prior of the training data, for the logit-adjusted loss only (set by the trainer; not
        # saved: inference never uses it); zeros = uniform = plain cross-entropy
        self.register_buffer("log_prior", torch.zeros(num_accents), persistent=False)
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

    @torch.no_grad()
    def set_prior(self, counts: torch.Tensor) -> None:
        """Training utterances per accent (A,) -> ``log_prior`` (used only when ``aid_balanced``)."""
        c = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1.0)
        self.log_prior.copy_((c / c.sum()).log().to(self.log_prior.dtype))

    def loss(self, logits: torch.Tensor, mask: torch.Tensor, accents: torch.Tensor) -> torch.Tensor | None:
        """:func:`aid_loss` of the (logit-adjusted when balanced) frame logits (B,T',A), plus with logit
        pooling the cross-entropy of the utterances' mean logits (adjusted likewise)."""
        if self.balanced:
            logits = logits + self.log_prior.to(logits.dtype)
        frame = aid_loss(logits, mask, accents)
        if frame is None or self.pooling != "logit":
            return frame
        m = mask.to(logits.dtype).unsqueeze(-1)
        utt_logits = (logits * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B,A)
        known = accents >= 0
        return frame + F.cross_entropy(utt_logits[known], accents[known])


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


def frame_evidence(post: torch.Tensor, pooling: str = "posterior") -> torch.Tensor:
    """What the utterance decision averages per frame: the frame posteriors (..., A), or their logs
    (floored at ``LOG_FLOOR``) for logit pooling."""
    return post if pooling == "posterior" else post.clamp_min(LOG_FLOOR).log()


def pooled_posterior(evidence_sum: torch.Tensor, count: torch.Tensor,
                     pooling: str = "posterior") -> torch.Tensor:
    """Utterance posterior (B,A) from the sum (B,A) of :func:`frame_evidence` over ``count`` (B,) frames."""
    mean = evidence_sum / count.clamp(min=1).to(evidence_sum.dtype).unsqueeze(-1)
    return mean if pooling == "posterior" else mean.softmax(-1)


def utterance_posterior(post: torch.Tensor, mask: torch.Tensor, pooling: str = "posterior") -> torch.Tensor:
    """Utterance posterior (B,A) of frame posteriors (B,T',A) over valid frames (mask (B,T'))."""
    m = mask.to(post.dtype).unsqueeze(-1)
    return pooled_posterior((frame_evidence(post, pooling) * m).sum(1), mask.sum(1), pooling)


def aid_accuracy(utt_post: torch.Tensor, accents: torch.Tensor) -> torch.Tensor | None:
    """Fraction of labelled utterances whose argmax posterior equals the label (None if none)."""
    ok = accents >= 0
    if int(ok.sum()) == 0:
        return None
    return (utt_post.argmax(-1)[ok] == accents[ok]).to(utt_post.dtype).mean()
