"""Transformer attention decoder (left-to-right, optional right-to-left as in U2++) and its loss.

Pre-LN blocks (self-attention, source attention over the memory, FFN), sinusoidal absolute positions,
label-smoothed KL loss normalised per utterance (WeNet convention). ``forward_one_step`` keeps a cache of
every block's outputs for the earlier positions, so beam search costs one position per step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qifusion.config import DecoderConfig
from qifusion.models.ctc import at_least_float32
from qifusion.models.mha import FeedForward, MultiHeadAttention

IGNORE_ID = -1


def sinusoid(length: int, d_model: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal positional table (length, d_model)."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(
        torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * (-math.log(1e4) / d_model)
    )
    pe = torch.zeros(length, d_model, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe.to(dtype)


class DecoderLayer(nn.Module):
    """One pre-LN decoder block."""

    def __init__(self, d_model: int, cfg: DecoderConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(
            d_model, cfg.attention_heads, dropout=cfg.self_attention_dropout_rate
        )
        self.src_attn = MultiHeadAttention(
            d_model, cfg.attention_heads, dropout=cfg.src_attention_dropout_rate
        )
        self.ffn = FeedForward(d_model, cfg.linear_units, dropout=cfg.dropout_rate)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def forward(
        self,
        tgt: torch.Tensor,
        tgt_mask: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        cache: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """tgt (B,L,D), tgt_mask (B,L,L), memory (B,T,D), memory_mask (B,1,T); cache (B,L-1,D) -> (B,L,D)."""
        h = self.norm1(tgt)
        if cache is None:
            q, residual, q_mask = h, tgt, tgt_mask
        else:
            q, residual, q_mask = h[:, -1:], tgt[:, -1:], tgt_mask[:, -1:]
        x = residual + self.dropout(self.self_attn(q, h, h, q_mask))
        m = self.norm2(x)
        x = x + self.dropout(self.src_attn(m, memory, memory, memory_mask))
        x = x + self.dropout(self.ffn(self.norm3(x)))
        if cache is not None:
            x = torch.cat([cache, x], dim=1)
        return x


class TransformerDecoder(nn.Module):
    """Token embedding + positions -> N blocks -> LayerNorm -> Linear(V)."""

    def __init__(self, vocab_size: int, d_model: int, cfg: DecoderConfig, *, num_blocks: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos_dropout = nn.Dropout(cfg.positional_dropout_rate)
        self.layers = nn.ModuleList([DecoderLayer(d_model, cfg) for _ in range(num_blocks)])
        self.after_norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size)

    def _embed(self, ys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        x = self.embed(ys) * math.sqrt(self.d_model)
        return self.pos_dropout(x + sinusoid(ys.size(1), self.d_model, device=ys.device, dtype=dtype))

    def forward(
        self, memory: torch.Tensor, memory_mask: torch.Tensor, ys_in: torch.Tensor, ys_lens: torch.Tensor
    ) -> torch.Tensor:
        """memory (B,T,D), memory_mask (B,1,T) bool, ys_in (B,L), ys_lens (B,) -> logits (B,L,V).

        memory/memory_mask may have B/n rows: each n consecutive rows of ys_in then read one memory row.
        """
        tgt_mask = target_mask(ys_lens, ys_in.size(1))
        x = self._embed(ys_in, memory.dtype)
        for layer in self.layers:
            x = layer(x, tgt_mask, memory, memory_mask)
        return self.output(self.after_norm(x))

    def forward_one_step(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        ys: torch.Tensor,
        cache: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Log-probs of the next token after prefixes ys (N,L) (first = sos).

        memory (N,T,D), memory_mask (N,1,T); cache: per block (N,L-1,D) from the previous step.
        Returns (log_probs (N,V), new cache: per block (N,L,D)).
        """
        n, length = ys.shape
        tgt_mask = torch.tril(torch.ones(length, length, dtype=torch.bool, device=ys.device)).expand(
            n, -1, -1
        )
        x = self._embed(ys, memory.dtype)
        new_cache = []
        for i, layer in enumerate(self.layers):
            x = layer(x, tgt_mask, memory, memory_mask, None if cache is None else cache[i])
            new_cache.append(x)
        y = self.output(self.after_norm(x[:, -1]))
        return torch.log_softmax(y, dim=-1), new_cache


def target_mask(ys_lens: torch.Tensor, length: int) -> torch.Tensor:
    """Causal & padding mask (B,L,L): position i sees j <= i with j < len."""
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=ys_lens.device))
    valid = torch.arange(length, device=ys_lens.device).unsqueeze(0) < ys_lens.unsqueeze(1)  # (B,L)
    return causal.unsqueeze(0) & valid.unsqueeze(1)


def add_sos_eos(
    tokens: torch.Tensor, token_lens: torch.Tensor, sos_eos: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B,L) padded -1 -> (ys_in, ys_out), both (B,L+1).

    ys_in = sos + tokens (padded with eos); ys_out = tokens + eos (padded with -1).
    """
    b, length = tokens.shape
    pos = torch.arange(length + 1, device=tokens.device).unsqueeze(0)
    body = torch.cat([tokens, tokens.new_full((b, 1), IGNORE_ID)], dim=1)
    ys_out = torch.where(pos == token_lens.unsqueeze(1), torch.full_like(body, sos_eos), body)
    ys_out = ys_out.masked_fill(pos > token_lens.unsqueeze(1), IGNORE_ID)
    ys_in = torch.cat([tokens.new_full((b, 1), sos_eos), tokens], dim=1)
    ys_in = ys_in.masked_fill(pos > token_lens.unsqueeze(1), sos_eos)
    return ys_in, ys_out


def reverse_tokens(tokens: torch.Tensor, token_lens: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first token_lens[i] entries; padding (-1) stays at the end. (B,L) -> (B,L)."""
    length = tokens.size(1)
    pos = torch.arange(length, device=tokens.device).unsqueeze(0)
    idx = (token_lens.unsqueeze(1) - 1 - pos).clamp(min=0)
    rev = torch.gather(tokens, 1, idx)
    return rev.masked_fill(pos >= token_lens.unsqueeze(1), IGNORE_ID)


def label_smoothing_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """KL(smoothed one-hot || softmax) summed over tokens (target -1 ignored), divided by B.

    logits (B,L,V), target (B,L).
    """
    b, _, v = logits.shape
    logp = torch.log_softmax(at_least_float32(logits), dim=-1)  # not bf16 under an autocast
    ignore = target == IGNORE_ID
    tgt = target.masked_fill(ignore, 0)
    conf = 1.0 - smoothing
    low = smoothing / (v - 1)
    true = torch.full_like(logp, low).scatter_(-1, tgt.unsqueeze(-1), conf)
    ent = conf * math.log(conf) if conf > 0 else 0.0
    ent += (v - 1) * low * math.log(low) if low > 0 else 0.0
    kl = ent - (true * logp).sum(-1)  # (B,L)
    return kl.masked_fill(ignore, 0.0).sum() / b


def token_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of non-ignored positions predicted right."""
    ok = target != IGNORE_ID
    return (logits.argmax(-1)[ok] == target[ok]).to(logits.dtype).mean()
