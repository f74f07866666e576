"""Plain multi-head attention with a boolean mask, used by the fusion block and the decoder.

Masked positions get zero weight; a query row with no visible key outputs zeros (as in WeNet), so
padded queries never produce NaN.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with H heads.

    Args:
        d_model: query/output size D. num_heads: H (divides D). dropout: on the attention weights.
        kv_dim: key/value input size (default D). q_dim: query input size (default D).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        dropout: float = 0.0,
        kv_dim: int | None = None,
        q_dim: int | None = None,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide d_model {d_model}")
        kv_dim = kv_dim or d_model
        self.h = num_heads
        self.d_k = d_model // num_heads
        self.linear_q = nn.Linear(q_dim or d_model, d_model)
        self.linear_k = nn.Linear(kv_dim, d_model)
        self.linear_v = nn.Linear(kv_dim, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """query (B,Tq,Dq), key/value (B,Tk,Dkv), mask (B,Tq,Tk) or (B,1,Tk) bool (True = visible).

        Returns (B,Tq,D). Key/value may have fewer rows, B_k = B / n: each n consecutive query rows then
        share one key/value row (and mask (B_k,1,Tk)), whose projections are computed once (attention
        rescoring: the n-best of one utterance attend to its memory).
        """
        b, tq, _ = query.shape
        bk = key.size(0)
        if bk != b:
            if b % bk:
                raise ValueError(f"query rows {b} are not a multiple of key rows {bk}")
            return self.forward(query.reshape(bk, (b // bk) * tq, -1), key, value, mask).reshape(b, tq, -1)
        q = self.linear_q(query).view(b, tq, self.h, self.d_k).transpose(1, 2)
        k = self.linear_k(key).view(b, -1, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(value).view(b, -1, self.h, self.d_k).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k)  # (B,H,Tq,Tk)
        if mask is not None:
            m = mask.unsqueeze(1)  # (B,1,Tq|1,Tk)
            scores = scores.masked_fill(~m, torch.finfo(scores.dtype).min)
            attn = torch.softmax(scores, dim=-1).masked_fill(~m, 0.0)
        else:
            attn = torch.softmax(scores, dim=-1)
        x = torch.matmul(self.dropout(attn), v)  # (B,H,Tq,d_k)
        return self.linear_out(x.transpose(1, 2).reshape(b, tq, -1))


class FeedForward(nn.Module):
    """Position-wise FFN: Linear -> SiLU -> Dropout -> Linear, (B,T,D) -> (B,T,D)."""

    def __init__(self, d_model: int, hidden: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden)
        self.w2 = nn.Linear(hidden, d_model)
        self.act = nn.SiLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.dropout(self.act(self.w1(x))))
