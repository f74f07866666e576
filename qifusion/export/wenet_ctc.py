"""The streaming CTC model in the form sherpa-onnx's ``OnlineRecognizer.from_wenet_ctc`` runs.

sherpa-onnx (``csrc/online-wenet-ctc-model.cc``, read for the interface, nothing copied) feeds six inputs
by position, batch 1, and reads the outputs by position::

    x                   (1, T_in, 80) float   raw kaldi fbank of int16-scale samples (no CMVN: it is
                                              inside our encoder), T_in = (chunk-1)*rate + right_context + 1
    offset              (1,) int64            WeNet offset (unused: our positions are relative)
    required_cache_size (1,) int64            chunk * left_chunks (unused: a constant of this graph)
    attn_cache          (num_blocks, H, R, 2*d_k) float, R = required_cache_size, zero-filled at start
    conv_cache          (num_blocks, 1, D, K-1) float
    attn_mask           (1, 1, R + chunk) bool, False = empty (zero-filled) cache slot
    -> log_probs (1, chunk, V), next_att_cache, next_conv_cache (same shapes as the inputs)

The cache length R is a constant of the exported graph (sherpa-onnx always sends exactly R frames), so
nothing in the graph depends on data. ``num_blocks`` in the metadata counts cache *blocks*; with
``fuse_into_ctc`` two extra blocks carry the accent state (see :class:`WenetCtcModule`).
"""

from __future__ import annotations

import torch
from torch import nn

from qifusion.errors import UserError
from qifusion.models.model import StepCaches


class WenetCtcModule(nn.Module):
    """A :class:`~qifusion.models.model.QifusionModel` seen through sherpa-onnx's wenet_ctc interface.

    Args:
        model: the torch model (eval mode). chunk_size, left_chunks: the values sherpa-onnx will use
            (its ``chunk_size`` / ``num_left_chunks`` options; both must be > 0).

    With ``model.accent.fuse_into_ctc`` the CTC head reads the fused memory, which needs the LAF cache
    (L, K_laf-1, D) and the fusion key/value cache (R, D_kv) besides the encoder caches. They travel in
    two extra blocks of ``attn_cache`` (each block holds R x 2D numbers per stream): block
    ``num_blocks`` holds the fusion cache (frame-aligned with the encoder cache, zero-padded from D_kv to
    2D), block ``num_blocks + 1`` holds the LAF cache flattened; the two matching ``conv_cache`` blocks
    are unused zeros. Both caches start as zeros, which is exactly the model's own initial state.
    """

    def __init__(self, model: nn.Module, *, chunk_size: int, left_chunks: int) -> None:
        super().__init__()
        if chunk_size <= 0 or left_chunks <= 0:
            raise UserError(
                f"sherpa-onnx export needs chunk_size > 0 and left_chunks > 0, got {chunk_size}, "
                f"{left_chunks}"
            )
        enc = model.encoder
        self.model = model
        self.chunk_size = chunk_size
        self.left_chunks = left_chunks
        self.geometry = model.chunk_geometry(chunk_size, left_chunks)
        self.required = self.geometry.cache_frames
        self.enc_blocks = enc.num_blocks
        self.fused = bool(model.cfg.accent.fuse_into_ctc)
        self.extra_blocks = 2 if self.fused else 0
        self.num_cache_blocks = self.enc_blocks + self.extra_blocks
        self.heads, self.d_k, self.d_model = enc.num_heads, enc.d_k, enc.output_size
        self.input_frames = self.geometry.window
        if self.fused:
            self._check_fused_fits()

    def _check_fused_fits(self) -> None:
        m = self.model
        width = 2 * self.d_model
        if m.fusion is not None and m.fusion.kv_dim > width:
            raise UserError(
                f"fuse_into_ctc export: the fusion cache width {m.fusion.kv_dim} exceeds the attention cache "
                f"width {width} (model.accent.embed_dim too large for the sherpa-onnx cache layout)"
            )
        if m.laf is not None:
            n = m.laf.num_layers * (m.laf.kernel - 1) * self.d_model
            if n > self.required * width:
                raise UserError(
                    f"fuse_into_ctc export: the LAF cache ({n} numbers) does not fit one attention cache "
                    f"block ({self.required * width}); export with more left chunks"
                )

    def metadata(self, *, vocab_size: int) -> dict[str, str]:
        """The metadata sherpa-onnx reads (plus informative keys)."""
        enc = self.model.encoder
        return {
            "model_type": "qifusion_wenet_ctc",
            "head": str(self.heads),
            "num_blocks": str(self.num_cache_blocks),
            "output_size": str(self.d_model),
            "cnn_module_kernel": str(enc.cnn_module_kernel),
            "right_context": str(enc.right_context),
            "subsampling_factor": str(enc.subsampling_rate),
            "vocab_size": str(vocab_size),
            "chunk_size": str(self.chunk_size),
            "left_chunks": str(self.left_chunks),
            "fuse_into_ctc": str(int(self.fused)),
        }

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        """Zero inputs of the exported shapes (the first chunk of a stream)."""
        R, K1 = self.required, self.model.encoder.cnn_module_kernel - 1
        x = torch.zeros(1, self.input_frames, self.model.encoder.cfg.input_dim)
        offset = torch.tensor([R], dtype=torch.int64)
        req = torch.tensor([R], dtype=torch.int64)
        att = torch.zeros(self.num_cache_blocks, self.heads, R, 2 * self.d_k)
        cnn = torch.zeros(self.num_cache_blocks, 1, self.d_model, K1)
        mask = torch.ones(1, 1, R + self.chunk_size, dtype=torch.bool)
        mask[:, :, :R] = False
        return x, offset, req, att, cnn, mask

    def forward(
        self,
        x: torch.Tensor,
        offset: torch.Tensor,
        required_cache_size: torch.Tensor,
        attn_cache: torch.Tensor,
        conv_cache: torch.Tensor,
        attn_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One chunk; shapes as in the module docstring."""
        nb, R = self.enc_blocks, self.required
        valid = attn_mask[:, 0, :]  # (1, R + C)
        fus_cache, laf_cache = self._unpack(attn_cache) if self.fused else (None, None)
        caches = StepCaches(attn_cache[:nb].unsqueeze(1), conv_cache[:nb], laf_cache, fus_cache)
        out, new = self.model.chunk_forward(x, caches, valid, cache_frames=R, ctc_only=True)
        # keep the graph's inputs alive (sherpa-onnx passes them by position)
        zero = (offset + required_cache_size).sum().to(out.ctc_log_probs.dtype) * 0.0
        new_att = new.att.squeeze(1)
        if not self.fused:
            return out.ctc_log_probs + zero, new_att, new.cnn
        packed = self._pack(new.fusion, new.laf, attn_cache)
        att_all = torch.cat([new_att, packed], dim=0)
        cnn_all = torch.cat([new.cnn, conv_cache[nb:]], dim=0)
        return out.ctc_log_probs + zero, att_all, cnn_all

    # ---- extra cache blocks of fuse_into_ctc ------------------------------------------------------
    def _unpack(self, attn_cache: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """attn_cache extra blocks -> fusion cache (1, R, D_kv) and LAF cache (1, L, K-1, D)."""
        nb, R, H, W = self.enc_blocks, self.required, self.heads, 2 * self.d_k
        m = self.model
        fus = laf = None
        if m.fusion is not None:
            blk = attn_cache[nb].permute(1, 0, 2).reshape(1, R, H * W)  # (1, R, 2D)
            fus = blk[:, :, : m.fusion.kv_dim]
        if m.laf is not None:
            n = m.laf.num_layers * (m.laf.kernel - 1) * self.d_model
            flat = attn_cache[nb + 1].reshape(-1)[:n]
            laf = flat.reshape(1, m.laf.num_layers, m.laf.kernel - 1, self.d_model)
        return fus, laf

    def _pack(self, fusion: torch.Tensor | None, new_laf: torch.Tensor | None,
              attn_cache: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_unpack` for the new state (fusion (1, R, D_kv)): (2, H, R, 2*d_k)."""
        nb, R, H, W = self.enc_blocks, self.required, self.heads, 2 * self.d_k
        blocks = []
        if fusion is not None:
            kv = torch.nn.functional.pad(fusion, (0, H * W - fusion.size(2)))
            blocks.append(kv.reshape(R, H, W).permute(1, 0, 2))
        else:
            blocks.append(attn_cache[nb])
        if new_laf is not None:
            flat = new_laf.reshape(-1)
            flat = torch.nn.functional.pad(flat, (0, H * R * W - flat.numel()))
            blocks.append(flat.reshape(H, R, W))
        else:
            blocks.append(attn_cache[nb + 1])
        return torch.stack(blocks, dim=0)
