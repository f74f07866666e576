"""CTC head: Linear -> log_softmax, and the CTC loss (blank id 0, summed per utterance / batch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is in a lower precision (bf16/fp16 under an autocast), else as it is."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class CTCHead(nn.Module):
    """(B,T',D) -> log-probs (B,T',V)."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(at_least_float32(self.proj(x)), dim=-1)  # not bf16 under a bf16 autocast

    @staticmethod
    def loss(
        log_probs: torch.Tensor, lens: torch.Tensor, tokens: torch.Tensor, token_lens: torch.Tensor
    ) -> torch.Tensor:
        """CTC loss summed over utterances / B (WeNet's normalisation).

        log_probs (B,T',V), lens (B,), tokens (B,L) padded with -1, token_lens (B,).
        Impossible alignments (too few frames) give 0 instead of inf (``zero_infinity``).
        """
        targets = tokens.masked_fill(tokens < 0, 0)
        loss = F.ctc_loss(
            log_probs.transpose(0, 1).float(),
            targets,
            lens,
            token_lens,
            blank=0,
            reduction="sum",
            zero_infinity=True,
        )
        return loss.to(log_probs.dtype) / log_probs.size(0)
