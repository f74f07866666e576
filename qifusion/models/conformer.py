"""Streaming Conformer encoder (Gulati et al., 2020) with U2/U2++ dynamic chunk training.

Block (pre-LN, macaron): ``x += ½·FFN(LN x)``; ``x += MHSA_rel(LN x)``; ``x += Conv(LN x)``;
``x += ½·FFN(LN x)``; ``x = LN x``. The conv module's depthwise convolution is causal (left padding
only, a (K-1)-frame cache while streaming) when ``cfg.causal``, and uses LayerNorm (per frame) rather
than BatchNorm, so no statistic mixes frames, padding or the future.

Streaming (U2, Zhang et al., 2020; WeNet's ``forward_chunk`` interface): each call takes the raw fbank of
one chunk plus the front end's right context and returns the chunk's outputs and the updated attention
key/value and conv caches; results equal the full forward with the same chunk mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from qifusion.config import ConfigError, EncoderConfig
from qifusion.models.attention import RelPositionMultiHeadAttention, chunk_cache_window, mask_to_bias
from qifusion.models.chunk_step import fast_forward_chunk, fast_path_enabled
from qifusion.models.frontend import Conv2dSubsampling, GlobalCMVN, RelPositionalEncoding
from qifusion.models.mask import chunk_mask, dynamic_chunk

__all__ = ["ConformerBlock", "ConformerEncoder", "ConvolutionModule", "EncoderOutput", "FeedForward"]


@dataclass
class EncoderOutput:
    """Result of :meth:`ConformerEncoder.forward`.

    out: (B, T', D) after the final norm. hidden: ``num_blocks`` tensors (B, T', D), each block's output.
    mask: (B, T') bool valid frames. chunk_mask: (B, T', T') bool attention mask actually used (chunk
    mask & valid keys; padded query rows also see themselves so no row is empty). chunk_size /
    left_chunks: the values used (-1 = full context / all history).
    """

    out: torch.Tensor
    hidden: list[torch.Tensor]
    mask: torch.Tensor
    chunk_mask: torch.Tensor
    chunk_size: int
    left_chunks: int


_SMALL_T = 32  # frames up to which the depthwise conv runs as unfold + einsum


class FeedForward(nn.Module):
    """Position-wise FFN: Linear -> SiLU -> Dropout -> Linear. (B, T, D) -> (B, T, D)."""

    def __init__(self, d_model: int, hidden: int, dropout_rate: float) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden)
        self.w2 = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.dropout(F.silu(self.w1(x))))


class ConvolutionModule(nn.Module):
    """Conformer conv module: pointwise -> GLU -> depthwise (causal or centred) -> LN -> SiLU -> pointwise.

    Causal: the depthwise conv sees frames ``t-K+1 .. t`` only (left zero padding / the conv cache), so
    padding at the end of an utterance never reaches a valid frame. Centred (full-context configs):
    padded frames are zeroed before the depthwise conv so they act like the conv's own zero padding.
    """

    def __init__(self, channels: int, kernel_size: int, *, causal: bool) -> None:
        super().__init__()
        if not causal and kernel_size % 2 == 0:
            raise ConfigError(
                f"config key 'model.encoder.cnn_module_kernel' must be odd for non-causal convs, "
                f"got {kernel_size}"
            )
        self.causal = causal
        self.kernel_size = kernel_size
        self.pointwise1 = nn.Linear(channels, 2 * channels)
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pointwise2 = nn.Linear(channels, channels)

    def _depthwise(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, T + K - 1) -> (B, D, T). Short inputs (streaming chunks) use unfold + einsum, about
        twice as fast as the mkldnn kernel there; long ones and exports use the conv kernel."""
        K = self.kernel_size
        if x.size(2) - K + 1 > _SMALL_T or torch.compiler.is_exporting():
            return self.depthwise(x)
        w = self.depthwise.weight.squeeze(1)  # (D, K)
        return torch.einsum("bdtk,dk->bdt", x.unfold(2, K, 1), w) + self.depthwise.bias.unsqueeze(-1)

    def forward(
        self,
        x: torch.Tensor,
        pad_mask: torch.Tensor | None = None,
        cache: torch.Tensor | None = None,
        *,
        return_cache: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Convolve.

        Args:
            x: (B, T, D). pad_mask: (B, T, 1) bool valid frames or None.
            cache: (B, D, K-1) previous GLU outputs (causal only), or None = zeros.
            return_cache: return the (B, D, K-1) cache for the next chunk.

        Returns:
            (B, T, D) and the new cache (None unless ``return_cache``).
        """
        x = F.glu(self.pointwise1(x), dim=-1)
        if pad_mask is not None:
            x = x.masked_fill(~pad_mask, 0.0)
        x = x.transpose(1, 2)  # (B, D, T)
        K = self.kernel_size
        new_cache = None
        if self.causal:
            if cache is not None and cache.size(-1) > 0:
                x = torch.cat([cache, x], dim=2)
            else:
                x = F.pad(x, (K - 1, 0))
            if return_cache:
                new_cache = x[:, :, x.size(2) - (K - 1) :]
        else:
            x = F.pad(x, ((K - 1) // 2, (K - 1) // 2))
        x = self._depthwise(x).transpose(1, 2)
        return self.pointwise2(F.silu(self.norm(x))), new_cache


class ConformerBlock(nn.Module):
    """One pre-LN Conformer block (macaron FFNs, rel-pos MHSA, conv module, final LN)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        d = cfg.output_size
        self.ff_scale = 0.5 if cfg.macaron else 1.0
        self.ff1 = FeedForward(d, cfg.linear_units, cfg.dropout_rate) if cfg.macaron else None
        self.norm_ff1 = nn.LayerNorm(d) if cfg.macaron else None
        self.attn = RelPositionMultiHeadAttention(d, cfg.attention_heads, cfg.attention_dropout_rate)
        self.norm_attn = nn.LayerNorm(d)
        self.conv = ConvolutionModule(d, cfg.cnn_module_kernel, causal=cfg.causal)
        self.norm_conv = nn.LayerNorm(d)
        self.ff2 = FeedForward(d, cfg.linear_units, cfg.dropout_rate)
        self.norm_ff2 = nn.LayerNorm(d)
        self.norm_final = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def forward(
        self,
        x: torch.Tensor,
        pos_emb: torch.Tensor,
        mask_bias: torch.Tensor | None = None,
        pad_mask: torch.Tensor | None = None,
        att_cache: torch.Tensor | None = None,
        cnn_cache: torch.Tensor | None = None,
        *,
        return_cache: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x: (B, T, D) -> (B, T, D), new attention cache (B,H,T_k,2d_k), new conv cache (B,D,K-1).

        ``mask_bias`` is the additive attention mask (B|1, 1, T, T_k); ``pad_mask`` (B, T, 1) bool.
        """
        if self.ff1 is not None:
            x = x + self.ff_scale * self.dropout(self.ff1(self.norm_ff1(x)))
        a, new_att = self.attn(self.norm_attn(x), pos_emb, mask_bias, att_cache, return_cache=return_cache)
        x = x + self.dropout(a)
        c, new_cnn = self.conv(self.norm_conv(x), pad_mask, cnn_cache, return_cache=return_cache)
        x = x + self.dropout(c)
        x = x + self.ff_scale * self.dropout(self.ff2(self.norm_ff2(x)))
        return self.norm_final(x), new_att, new_cnn


class ConformerEncoder(nn.Module):
    """CMVN -> conv sub-sampling -> ``num_blocks`` Conformer blocks -> LayerNorm.

    Attributes: ``output_size``, ``num_blocks``, ``subsampling_rate``, ``right_context``, ``num_heads``,
    ``d_k``, ``cnn_module_kernel``.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        if cfg.output_size % cfg.attention_heads:
            raise ConfigError(
                f"model.encoder.output_size={cfg.output_size} is not divisible by "
                f"model.encoder.attention_heads={cfg.attention_heads}"
            )
        self.cfg = cfg
        self.output_size = cfg.output_size
        self.num_blocks = cfg.num_blocks
        self.num_heads = cfg.attention_heads
        self.d_k = cfg.output_size // cfg.attention_heads
        self.cnn_module_kernel = cfg.cnn_module_kernel
        self.cmvn = GlobalCMVN(cfg.input_dim)
        self.embed = Conv2dSubsampling(cfg.input_dim, cfg.output_size, cfg.subsampling, scale=cfg.embed_scale,
                                       channels=cfg.subsampling_channels)
        self.subsampling_rate = self.embed.subsampling_rate
        self.right_context = self.embed.right_context
        self.pos_enc = RelPositionalEncoding(cfg.output_size, cfg.positional_dropout_rate)
        self.dropout = nn.Dropout(cfg.dropout_rate)
        self.blocks = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.num_blocks))
        self.after_norm = nn.LayerNorm(cfg.output_size)

    def set_cmvn(self, mean: torch.Tensor, istd: torch.Tensor, floor: torch.Tensor | None = None) -> None:
        """Store global CMVN stats: (F,) mean, inverse std and input floor (None = no floor)."""
        self.cmvn.set_stats(mean, istd, floor)

    def forward(
        self,
        feats: torch.Tensor,
        feats_lens: torch.Tensor,
        *,
        chunk_size: int | None = None,
        left_chunks: int = -1,
    ) -> EncoderOutput:
        """Encode a padded batch.

        Args:
            feats: (B, T, F) raw fbank. feats_lens: (B,) valid frames.
            chunk_size: None = training policy (random dynamic chunk when ``self.training``, else the
                static chunk or full context); -1 = full context; > 0 = that chunk size.
            left_chunks: visible history chunks when ``chunk_size > 0`` (-1 = all).
        """
        cfg = self.cfg
        x, mask = self.embed(self.cmvn(feats), feats_lens)
        T = x.size(1)
        if chunk_size is None:
            chunk_size, left_chunks = dynamic_chunk(
                T,
                training=self.training,
                use_dynamic_chunk=cfg.use_dynamic_chunk,
                use_dynamic_left_chunk=cfg.use_dynamic_left_chunk,
                max_chunk=cfg.max_chunk,
                static_chunk_size=cfg.static_chunk_size,
            )
        if chunk_size <= 0:
            chunk_size, left_chunks = -1, -1
        full = chunk_mask(T, chunk_size, left_chunks, device=x.device)
        att_mask = full.unsqueeze(0) & mask.unsqueeze(1)  # (B, T', T')
        att_mask |= torch.eye(T, dtype=torch.bool, device=x.device)  # no empty rows (padded queries)
        all_valid = bool(mask.all())
        mask_bias = None if (all_valid and chunk_size < 0) else mask_to_bias(att_mask.unsqueeze(1), x.dtype)
        pad_mask = None if all_valid else mask.unsqueeze(-1)
        pos_emb = self.pos_enc(T, T, like=x)
        x = self.dropout(x)
        hidden: list[torch.Tensor] = []
        for block in self.blocks:
            x, _, _ = block(x, pos_emb, mask_bias, pad_mask)
            hidden.append(x)
        return EncoderOutput(
            out=self.after_norm(x),
            hidden=hidden,
            mask=mask,
            chunk_mask=att_mask,
            chunk_size=chunk_size,
            left_chunks=left_chunks,
        )

    def init_cache(
        self, batch_size: int = 1, *, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Empty caches: att (num_blocks, B, H, 0, 2*d_k) and zero cnn (num_blocks, B, D, K-1)."""
        ref = self.after_norm.weight
        device = device or ref.device
        dtype = dtype or ref.dtype
        L, H, D, K1 = self.num_blocks, self.num_heads, self.output_size, self.cnn_module_kernel - 1
        att = torch.zeros(L, batch_size, H, 0, 2 * self.d_k, device=device, dtype=dtype)
        cnn = torch.zeros(L, batch_size, D, K1, device=device, dtype=dtype)
        return att, cnn

    def forward_chunk(
        self,
        xs: torch.Tensor,
        offset: int,
        required_cache_size: int,
        att_cache: torch.Tensor,
        cnn_cache: torch.Tensor,
        att_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Encode one chunk of B streams with caches (WeNet/sherpa-onnx ``forward_chunk`` semantics).

        Args:
            xs: (B, T_in, F) raw fbank, ``T_in = (chunk-1)*subsampling_rate + right_context + 1``.
            offset: frames already output; unused (positions are relative), kept for compatibility.
            required_cache_size: history frames to keep in the returned attention cache: < 0 all,
                0 none, > 0 that many (``left_chunks * chunk``).
            att_cache: (num_blocks, B, H, T_cache, 2*d_k) keys|values (T_cache may be 0).
            cnn_cache: (num_blocks, B, D, K-1) conv inputs of the previous frames (zeros at the start;
                an empty tensor also means zeros).
            att_mask: (B, T_cache + chunk) bool, ``True`` for valid cache/chunk positions (left-padded
                or zero-filled caches); None = all valid.

        Returns:
            out (B, chunk, D) after the final norm, hidden (num_blocks tensors (B, chunk, D)),
            new_att_cache (num_blocks, B, H, T_new, 2*d_k), new_cnn_cache (num_blocks, B, D, K-1).
            In eval mode without autograd (and not exporting) the caches may be non-contiguous views.
        """
        del offset  # relative positions: results do not depend on it
        if not self.cfg.causal:
            raise ConfigError("forward_chunk needs a streaming encoder (model.encoder.causal: true)")
        if fast_path_enabled(self):  # inference: same numbers, fewer ops (see chunk_step.py)
            return fast_forward_chunk(self, xs, required_cache_size, att_cache, cnn_cache, att_mask)
        x, _ = self.embed(self.cmvn(xs))
        B, T, _ = x.shape
        t_cache = att_cache.size(3) if att_cache.dim() == 5 else 0
        k_len = t_cache + T
        pos_emb = self.pos_enc(T, k_len, like=x)
        mask_bias, start = chunk_cache_window(att_mask, batch=B, k_len=k_len,
                                              required_cache_size=required_cache_size, dtype=x.dtype)
        has_cnn = cnn_cache.numel() > 0
        hidden: list[torch.Tensor] = []
        new_att: list[torch.Tensor] = []
        new_cnn: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            a_c = att_cache[i] if t_cache > 0 else None
            c_c = cnn_cache[i] if has_cnn else None
            x, kv, cc = block(x, pos_emb, mask_bias, None, a_c, c_c, return_cache=True)
            new_att.append(kv[:, :, start:])
            new_cnn.append(cc)
            hidden.append(x)
        # stacked once (not written block by block into a buffer: in an exported graph each such write
        # is a ScatterElements over the whole cache, 40% of the ONNX chunk step's time)
        return self.after_norm(x), hidden, torch.stack(new_att), torch.stack(new_cnn)
