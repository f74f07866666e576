"""Exportable pieces of the full model for qifusion's own ONNX backend.

* :class:`ChunkStep`: one streaming chunk of B streams through encoder, LAF, AID, fusion and the CTC
  head, with every cache of fixed length ``R = chunk_size * left_chunks`` (zero-filled, masked by
  ``cache_mask``). The chunk always has the full ``T_in`` fbank frames; the last, shorter chunk of an
  utterance is zero-padded by the caller and its padded output frames masked out with ``chunk_mask``
  (attention keys, fusion keys; the convolutions are causal, so padding at the end reaches no valid
  frame). Fixed shapes keep every slice a constant of the graph; only B is dynamic.
* :class:`DecoderScores`: the attention decoder's per-position log-probabilities, for rescoring and
  (position by position) beam search. N, T' and L are dynamic.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from qifusion.models.decoder import TransformerDecoder
from qifusion.models.model import StepCaches

CHUNK_INPUTS = ["feats", "att_cache", "cnn_cache", "cache_mask", "chunk_mask", "laf_cache", "fusion_cache"]
CHUNK_OUTPUTS = ["ctc_log_probs", "memory", "accent_post", "new_att_cache", "new_cnn_cache", "new_laf_cache",
                 "new_fusion_cache"]


class ChunkStep(nn.Module):
    """Full-model chunk step with fixed-size caches.

    Inputs (B streams; R = chunk*left_chunks; C = chunk; L = LAF layers; present only when the model
    has that part: laf_cache with LAF, fusion_cache with fusion)::

        feats (B, T_in, F) raw fbank          att_cache (nb, B, H, R, 2*d_k)   cnn_cache (nb, B, D, K-1)
        cache_mask (B, R) bool                chunk_mask (B, C) bool (False = padded output frame)
        laf_cache (B, L, K_laf-1, D)          fusion_cache (B, R, D_kv)

    Outputs: ctc_log_probs (B, C, V), memory (B, C, D), accent_post (B, C, A) (only with AID),
    new_att_cache, new_cnn_cache, new_laf_cache, new_fusion_cache (same shapes as the inputs).
    The caller updates the mask: ``new cache_mask = cat(cache_mask, chunk_mask)[:, C:]``.
    """

    def __init__(self, model: nn.Module, *, chunk_size: int, left_chunks: int) -> None:
        super().__init__()
        self.model = model
        self.geometry = model.chunk_geometry(chunk_size, left_chunks)
        self.chunk_size = chunk_size
        self.required = self.geometry.cache_frames
        self.input_frames = self.geometry.window
        self.has_laf = model.laf is not None
        self.has_fusion = model.fusion is not None
        self.has_aid = model.aid is not None
        if model.oracle is not None:
            from qifusion.errors import UserError

            raise UserError("oracle_accent models need the true accent as input and are not exportable")

    @property
    def input_names(self) -> list[str]:
        skip = set()
        if not self.has_laf:
            skip.add("laf_cache")
        if not self.has_fusion:
            skip.add("fusion_cache")
        return [n for n in CHUNK_INPUTS if n not in skip]

    @property
    def output_names(self) -> list[str]:
        skip = set()
        if not self.has_aid:
            skip.add("accent_post")
        if not self.has_laf:
            skip.add("new_laf_cache")
        if not self.has_fusion:
            skip.add("new_fusion_cache")
        return [n for n in CHUNK_OUTPUTS if n not in skip]

    def example_inputs(self, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        """Zero-cache inputs of the exported shapes (a stream's first chunk), in ``input_names`` order."""
        m, B, R = self.model, batch_size, self.required
        enc = m.encoder
        ref = next(m.parameters())
        x = {
            "feats": torch.randn(B, self.input_frames, enc.cfg.input_dim),
            "att_cache": torch.zeros(enc.num_blocks, B, enc.num_heads, R, 2 * enc.d_k),
            "cnn_cache": torch.zeros(enc.num_blocks, B, enc.output_size, enc.cnn_module_kernel - 1),
            "cache_mask": torch.zeros(B, R, dtype=torch.bool),
            "chunk_mask": torch.ones(B, self.chunk_size, dtype=torch.bool),
        }
        if self.has_laf:
            x["laf_cache"] = m.laf.init_cache(B, device=ref.device, dtype=ref.dtype)
        if self.has_fusion:
            x["fusion_cache"] = torch.zeros(B, R, m.fusion.kv_dim)
        return tuple(x[n] for n in self.input_names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Inputs in :attr:`input_names` order; outputs in :attr:`output_names` order."""
        x = dict(zip(self.input_names, inputs))
        valid = torch.cat([x["cache_mask"], x["chunk_mask"]], dim=1)  # (B, R + C)
        caches = StepCaches(x["att_cache"], x["cnn_cache"], x.get("laf_cache"), x.get("fusion_cache"))
        out, new = self.model.chunk_forward(x["feats"], caches, valid,
                                            cache_frames=self.geometry.cache_frames)
        res = {
            "ctc_log_probs": out.ctc_log_probs,
            "memory": out.memory,
            "accent_post": None if out.aid_logits is None else out.aid_logits.softmax(-1),
            "new_att_cache": new.att,
            "new_cnn_cache": new.cnn,
            "new_laf_cache": new.laf,
            "new_fusion_cache": new.fusion,
        }
        return tuple(res[n] for n in self.output_names)


class DecoderScores(nn.Module):
    """Attention decoder log-probabilities at every position.

    memory (N, T', D), memory_mask (N, T') bool, ys_in (N, L) int64 (sos + tokens, padded), ys_lens (N,)
    int64 -> log_probs (N, L, V).
    """

    input_names: ClassVar[list[str]] = ["memory", "memory_mask", "ys_in", "ys_lens"]
    output_names: ClassVar[list[str]] = ["log_probs"]

    def __init__(self, decoder: TransformerDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        d = self.decoder
        n, t, length = 3, 11, 5
        memory = torch.randn(n, t, d.d_model)
        mask = torch.arange(t).unsqueeze(0) < torch.tensor([[11], [7], [9]])
        ys = torch.randint(0, d.output.out_features, (n, length))
        return memory, mask, ys, torch.tensor([5, 3, 4])

    def forward(self, memory: torch.Tensor, memory_mask: torch.Tensor, ys_in: torch.Tensor,
                ys_lens: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(memory, memory_mask.unsqueeze(1), ys_in, ys_lens)
        return torch.log_softmax(logits, dim=-1)
