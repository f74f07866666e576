"""Relative-position multi-head self-attention with a key/value cache (plain attention: mha.py).

It uses :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels, no Python loops over
heads or frames). Masks are ``bool`` with ``True`` = may attend.

Relative-position self-attention follows Transformer-XL (Dai et al., 2019) as used by the Conformer
(Gulati et al., 2020): score(i, j) = (q_i + u)·k_j + (q_i + v)·W_p r_{i-j}, with learned per-head biases
``u`` and ``v`` and sinusoidal r. The first term is SDPA's ``q·k`` (query ``q + u``); the second ("bd")
term is passed to SDPA as a float ``attn_mask`` together with the ``-inf`` mask. Because r depends only
on ``i - j``, a chunk gives the same result wherever it sits in a stream (unlike WeNet's legacy
absolute-offset variant).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RelPositionMultiHeadAttention", "chunk_cache_window", "mask_to_bias", "rel_shift"]


def mask_to_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool mask (``True`` = attend) -> additive float mask (0 / -inf), same shape."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill_(~mask, float("-inf"))


def chunk_cache_window(
    att_mask: torch.Tensor | None, *, batch: int, k_len: int, required_cache_size: int, dtype: torch.dtype
) -> tuple[torch.Tensor | None, int]:
    """Per-chunk attention set-up of ``forward_chunk``: the additive key mask and the cache start.

    ``att_mask`` (B, k_len) bool marks valid cache + chunk keys (or None: all valid) -> bias
    (B, 1, 1, k_len). ``start`` is the first of the ``k_len`` keys kept as the next cache:
    ``required_cache_size`` < 0 keeps all, 0 none, > 0 that many.
    """
    bias = None
    if att_mask is not None:
        if att_mask.shape != (batch, k_len):
            raise ValueError(f"att_mask has shape {tuple(att_mask.shape)}, expected {(batch, k_len)}")
        bias = mask_to_bias(att_mask[:, None, None, :], dtype)
    if required_cache_size < 0:
        start = 0
    elif required_cache_size == 0:
        start = k_len
    else:
        start = max(k_len - required_cache_size, 0)
    return bias, start


def rel_shift(scores: torch.Tensor, k_len: int) -> torch.Tensor:
    """Pick per-pair relative scores out of per-distance scores.

    Args:
        scores: (B, H, T_q, T_q + k_len) contiguous; column ``c`` holds the score of distance
            ``k_len - 1 - c`` (the order of :class:`~qifusion.models.frontend.RelPositionalEncoding`).
        k_len: number of keys; queries are the last ``T_q`` keys.

    Returns:
        (B, H, T_q, k_len) view with ``[..., i, j]`` = score of distance ``(k_len - T_q + i) - j``, i.e.
        column ``T_q - 1 - i + j``: a flat offset ``(T_q - 1) + i*(L - 1) + j`` with ``L = T_q + k_len``,
        which a slice of the flattened rows and a reshape give without copying.
    """
    B, H, Tq, L = scores.shape
    flat = scores.reshape(B, H, Tq * L)
    return flat[:, :, Tq - 1 : Tq - 1 + Tq * (L - 1)].reshape(B, H, Tq, L - 1)[..., :k_len]


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d_k) -> (B, T, H*d_k).

    While exporting, the copy is explicit: the exporter's SDPA decomposition returns other strides than
    its meta kernel, and an implicit ``reshape`` then fails to view.
    """
    B, H, T, dk = x.shape
    x = x.transpose(1, 2)
    if torch.compiler.is_exporting():
        x = x.clone(memory_format=torch.contiguous_format)
    return x.reshape(B, T, H * dk)


class RelPositionMultiHeadAttention(nn.Module):
    """Self-attention with relative positions, pos biases u/v and a key/value cache.

    The cache layout is WeNet's: (B, H, T_cache, 2*d_k) holding keys then values on the last axis.
    """

    def __init__(self, d_model: int, num_heads: int, dropout_rate: float = 0.0) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.d_k = d_model // num_heads
        self.dropout_rate = dropout_rate
        self.linear_qkv = nn.Linear(d_model, 3 * d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.linear_out = nn.Linear(d_model, d_model)
        self.pos_bias_u = nn.Parameter(torch.empty(num_heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(num_heads, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def forward(
        self,
        x: torch.Tensor,
        pos_emb: torch.Tensor,
        mask_bias: torch.Tensor | None = None,
        cache: torch.Tensor | None = None,
        *,
        return_cache: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend.

        Args:
            x: (B, T, D) queries (and new keys/values).
            pos_emb: (T + T_k, D) embeddings of distances ``T_k-1 .. -T`` (T_k = T_cache + T).
            mask_bias: additive float mask (0 / -inf) broadcastable to (B, H, T, T_k), or None.
            cache: (B, H, T_cache, 2*d_k) keys|values of earlier frames, or None.
            return_cache: also return the (B, H, T_k, 2*d_k) keys|values of cache + x.

        Returns:
            (B, T, D) output and the new cache (None unless ``return_cache``).
        """
        B, T = x.shape[:2]
        H, dk = self.num_heads, self.d_k
        qkv = self.linear_qkv(x).view(B, T, 3, H, dk)
        q = qkv[:, :, 0].transpose(1, 2)  # (B, H, T, dk)
        new_cache = None
        if cache is not None and (cache.size(2) > 0 or return_cache):
            kv = qkv[:, :, 1:].permute(0, 3, 1, 2, 4).reshape(B, H, T, 2 * dk)
            if cache.size(2) > 0:
                kv = torch.cat([cache, kv], dim=2)
            k, v = kv[..., :dk], kv[..., dk:]
            new_cache = kv if return_cache else None
        else:
            k = qkv[:, :, 1].transpose(1, 2)
            v = qkv[:, :, 2].transpose(1, 2)
            if return_cache:
                new_cache = torch.cat([k, v], dim=-1)
        k_len = k.size(2)
        scale = 1.0 / math.sqrt(dk)
        # the 1/sqrt(d_k) of the bd term is folded into the (small) position projection
        p = F.linear(pos_emb, self.linear_pos.weight * scale).view(-1, H, dk).permute(1, 2, 0)
        bd = torch.matmul(q + self.pos_bias_v.unsqueeze(1), p)  # (B, H, T, T + T_k)
        bd = rel_shift(bd, k_len)
        attn_bias = bd if mask_bias is None else mask_bias + bd
        drop = self.dropout_rate if self.training else 0.0
        out = F.scaled_dot_product_attention(
            q + self.pos_bias_u.unsqueeze(1), k, v, attn_mask=attn_bias, dropout_p=drop, scale=scale
        )
        return self.linear_out(_merge_heads(out)), new_cache
