"""Layer-adapted fusion (LAF): a frame-level accent embedding from several encoder blocks.

Idea from Qifusion-Net (arXiv 2407.03026): accent information is spread over the middle and upper
encoder blocks, so the accent embedding reads a learnable softmax-weighted stack of them and
convolves over (layers x time x features). Unlike the paper's public code, the convolution here is
chunk-causal (left padding in time only, so frame t sees frames t-K+1..t of the blocks' outputs,
which are themselves chunk-causal), the layer weights are really applied, and the norm is a
per-frame LayerNorm (no utterance-level InstanceNorm over padded frames).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qifusion.config import AccentConfig


class LayerAdaptedFusion(nn.Module):
    """Softmax-weighted stack of encoder blocks -> causal Conv2d -> LayerNorm -> Linear.

    Args:
        cfg: accent config (``laf_layers`` 1-based block indices, ``laf_kernel`` time kernel,
            ``laf_feature_kernel`` feature kernel, ``laf_channels`` conv output channels,
            ``embed_dim`` output size).
        d_model: encoder block output size D.
    """

    def __init__(self, cfg: AccentConfig, d_model: int) -> None:
        super().__init__()
        self.layers = [int(i) for i in cfg.laf_layers]
        self.num_layers = len(self.layers)
        self.kernel = cfg.laf_kernel
        self.d_model = d_model
        # logits of the per-layer weights; softmax(0) = uniform at the start
        self.layer_logits = nn.Parameter(torch.zeros(self.num_layers))
        kf = cfg.laf_feature_kernel
        self.conv = nn.Conv2d(
            self.num_layers, cfg.laf_channels, kernel_size=(cfg.laf_kernel, kf), padding=(0, kf // 2)
        )
        self.act = nn.SiLU()
        self.norm = nn.LayerNorm(cfg.laf_channels * d_model)
        self.dropout = nn.Dropout(cfg.dropout_rate)
        self.proj = nn.Linear(cfg.laf_channels * d_model, cfg.embed_dim)

    def weights(self) -> torch.Tensor:
        """Softmax layer weights, shape (L,), in the order of ``laf_layers``."""
        return torch.softmax(self.layer_logits, dim=0)

    def select(self, hidden: list[torch.Tensor]) -> torch.Tensor:
        """Stack the read blocks: list of num_blocks (B,T',D) -> (B,L,T',D)."""
        return torch.stack([hidden[i - 1] for i in self.layers], dim=1)

    def init_cache(self, batch_size: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Zero cache (B,L,K-1,D): the same zeros as the left padding of the offline forward."""
        return torch.zeros(
            batch_size, self.num_layers, self.kernel - 1, self.d_model, device=device, dtype=dtype
        )

    def forward(
        self, hidden: list[torch.Tensor], cache: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Accent embedding of a whole utterance or of one chunk.

        Args:
            hidden: num_blocks tensors (B,T',D) (all encoder blocks' outputs).
            cache: (B,L,K-1,D) stacked block outputs of the K-1 frames before this chunk
                (``None`` = start of the utterance, i.e. zero left padding).
        Returns:
            (emb (B,T',E), new_cache (B,L,K-1,D)).
        """
        x = self.select(hidden)  # (B,L,T,D)
        b, _, t, _ = x.shape
        if cache is None:
            cache = self.init_cache(b, device=x.device, dtype=x.dtype)
        x = torch.cat([cache, x], dim=2)  # (B,L,K-1+T,D)
        new_cache = x[:, :, x.size(2) - (self.kernel - 1) :, :]
        w = self.weights().to(x.dtype) * self.num_layers  # mean 1, so the init scale is kept
        y = self.conv(x * w.view(1, -1, 1, 1))  # (B,C,T,D): left context only in time
        y = self.act(y).permute(0, 2, 1, 3).reshape(b, t, -1)  # (B,T,C*D)
        y = self.dropout(self.norm(y))
        return self.proj(y), new_cache


class LastBlockEmbedding(nn.Module):
    """Accent embedding from the encoder's final output only (ablation "fusion without LAF").

    Per-frame LayerNorm + Linear: (B,T',D) -> (B,T',E); no state, trivially streaming.
    """

    def __init__(self, cfg: AccentConfig, d_model: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, cfg.embed_dim)

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        """(B,T',D) -> (B,T',E)."""
        return self.proj(F.silu(self.norm(out)))
