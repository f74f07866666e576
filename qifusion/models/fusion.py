"""Cross-attention fusion of acoustic frames and accent embeddings (Qifusion-Net's fusion block).

Direction ``acoustic_query`` (the paper's): each acoustic frame (encoder final output) queries the
accent embeddings; ``accent_query``: each frame's accent embedding queries the acoustic frames. Either
way the result is added to the acoustic frame (residual), optionally followed by an FFN, then a
LayerNorm. The attention mask is the encoder's own chunk mask (plus padding), fixed at decode time (the
public code drew a random mask again at inference), so the block streams: a cache of the key/value
source frames (accent embeddings or acoustic frames) of the left chunks is all it needs.
"""

from __future__ import annotations

import torch
from torch import nn

from qifusion.config import AccentConfig
from qifusion.models.mha import FeedForward, MultiHeadAttention


class AccentFusion(nn.Module):
    """Residual cross-attention block. Args: cfg (accent config), d_model: acoustic size D."""

    def __init__(self, cfg: AccentConfig, d_model: int) -> None:
        super().__init__()
        self.acoustic_query = cfg.fusion_direction == "acoustic_query"
        e = cfg.embed_dim
        q_dim, kv_dim = (d_model, e) if self.acoustic_query else (e, d_model)
        self.kv_dim = kv_dim
        self.norm_q = nn.LayerNorm(q_dim)
        self.norm_kv = nn.LayerNorm(kv_dim)
        self.attn = MultiHeadAttention(d_model, cfg.fusion_heads, q_dim=q_dim, kv_dim=kv_dim)
        self.dropout = nn.Dropout(cfg.dropout_rate)
        self.ffn: FeedForward | None = None
        if cfg.fusion_ffn_units > 0:
            self.norm_ffn = nn.LayerNorm(d_model)
            self.ffn = FeedForward(d_model, cfg.fusion_ffn_units, dropout=cfg.dropout_rate)
        self.norm_out = nn.LayerNorm(d_model)

    def init_cache(self, batch_size: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Empty key/value-source cache (B,0,Dkv)."""
        return torch.zeros(batch_size, 0, self.kv_dim, device=device, dtype=dtype)

    def forward(
        self,
        acoustic: torch.Tensor,
        accent: torch.Tensor,
        mask: torch.Tensor,
        cache: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse one utterance (mask = chunk mask) or one chunk (keys = cache + chunk).

        Args:
            acoustic: (B,T,D) encoder output. accent: (B,T,E) accent embeddings.
            mask: (B,T,Tc+T) bool, True = query may attend that key (Tc = cache length).
            cache: (B,Tc,Dkv) key/value source of earlier frames (None = none).
        Returns:
            (fused (B,T,D), kv source (B,Tc+T,Dkv): cache + this chunk, for the caller to trim).
        """
        q_src, kv_src = (acoustic, accent) if self.acoustic_query else (accent, acoustic)
        if cache is not None and cache.size(1) > 0:
            kv_src = torch.cat([cache, kv_src], dim=1)
        kv = self.norm_kv(kv_src)
        x = acoustic + self.dropout(self.attn(self.norm_q(q_src), kv, kv, mask))
        if self.ffn is not None:
            x = x + self.dropout(self.ffn(self.norm_ffn(x)))
        return self.norm_out(x), kv_src
