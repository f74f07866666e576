"""The inference contract: what a decoding backend offers, whatever runs it.

Two backends implement :class:`DecodingModel`: the torch model
(:class:`qifusion.models.model.QifusionModel`) and the ONNX backend
(:class:`qifusion.export.onnx_backend.OnnxModel`). The Recognizer, the searches, ``transcribe``,
``decode`` and the server use only what is written here, so streaming behaves the same on both::

    geom = model.chunk_geometry(chunk_size, left_chunks)   # one ChunkGeometry (window formula once)
    state = model.init_state(batch_size)                   # opaque per-stream caches (StreamStateLike)
    out, state = model.step(feats, state, geom)            # one chunk of B streams -> ChunkResult
    enc = model.encode(feats, lens, chunk_size=..., left_chunks=...)   # the chunk-masked reference
    model.attention_scores(...), model.decoder_step(...)   # attention decoder (when has_decoder)

Tensors in and out are torch tensors (float32 on the CPU for ONNX), so the search code is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from qifusion.models.geometry import ChunkGeometry

__all__ = ["ChunkGeometry", "ChunkResult", "DecodingModel", "EncodeResult", "StreamStateLike"]


@dataclass
class EncodeResult:
    """Offline (chunk-masked) encoding of a batch.

    ctc_log_probs (B,T',V); memory (B,T',D) decoder input; lens (B,) valid frames;
    accent_post (B,T',A) frame posteriors or None; accent_utt (B,A) utterance posterior or None.
    """

    ctc_log_probs: torch.Tensor
    memory: torch.Tensor
    lens: torch.Tensor
    accent_post: torch.Tensor | None
    accent_utt: torch.Tensor | None


@dataclass
class ChunkResult:
    """One streaming chunk: ctc_log_probs (B,C,V), memory (B,C,D), accent_post (B,C,A) or None,
    accent_utt (B,A) running utterance posterior (all frames so far) or None."""

    ctc_log_probs: torch.Tensor
    memory: torch.Tensor
    accent_post: torch.Tensor | None
    accent_utt: torch.Tensor | None = None


@runtime_checkable
class StreamStateLike(Protocol):
    """The caches of B streams, opaque to the caller: batch them, split them, count them."""

    @property
    def batch_size(self) -> int: ...

    @staticmethod
    def stack(states: list[Any]) -> Any:
        """One state of all ``states`` (same type) in order."""
        ...

    def unstack(self) -> list[Any]:
        """``batch_size`` single-stream states."""
        ...


@runtime_checkable
class DecodingModel(Protocol):
    """A model the Recognizer and the searches can decode with (torch or ONNX)."""

    @property
    def aid_pooling(self) -> str:
        """How the utterance accent pools frame evidence (``model.accent.aid_pooling``)."""
        ...

    @property
    def has_decoder(self) -> bool:
        """True when ``attention_scores`` / ``decoder_step`` work (an attention decoder exists)."""
        ...

    def chunk_geometry(self, chunk_size: int = -1, left_chunks: int = -1) -> ChunkGeometry:
        """The streaming geometry for ``chunk_size``/``left_chunks`` (UserError when unsupported)."""
        ...

    def init_state(self, batch_size: int = 1) -> StreamStateLike:
        """Fresh caches of ``batch_size`` streams."""
        ...

    def step(self, feats: torch.Tensor, state: Any, geometry: ChunkGeometry) -> tuple[ChunkResult, Any]:
        """One chunk of B streams: feats (B, T_in, F), ``T_in <= geometry.window``."""
        ...

    def encode(self, feats: torch.Tensor, feats_lens: torch.Tensor, *, chunk_size: int = -1,
               left_chunks: int = -1) -> EncodeResult:
        """Chunk-masked forward of a padded batch feats (B, T, F), feats_lens (B,)."""
        ...

    def attention_scores(self, memory: torch.Tensor, lens: torch.Tensor, hyps_per_utt: list[list[list[int]]],
                         *, reverse_weight: float = 0.0) -> list[torch.Tensor]:
        """Attention-decoder log-likelihood (N_b,) of each hypothesis of each utterance."""
        ...

    def decoder_step(self, memory: torch.Tensor, memory_mask: torch.Tensor, ys: torch.Tensor,
                     cache: Any) -> tuple[torch.Tensor, Any]:
        """Next-token log-probs (N, V) after prefixes ys (N, L); memory_mask (N, 1, T')."""
        ...
