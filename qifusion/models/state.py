"""Streaming state of :class:`qifusion.models.model.QifusionModel` (one or many streams).

All caches hold the last ``T_cache`` frames (after sub-sampling) that the next chunk may attend to.
Streams of different lengths are batched by left-padding their caches; ``cache_mask`` (B,T_cache)
marks the real frames (always a suffix of each row), and is what the encoder receives as ``att_mask``.

:class:`CacheFields` is the field spec that every backend's state shares (torch tensors here, numpy
arrays in the ONNX backend's :class:`~qifusion.export.onnx_state.OnnxState`): one list of caches, so a
new cache is added in one place and both states carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import torch

from qifusion.models.aid import pooled_posterior


def _left_pad(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Zero-pad ``x`` on the left of ``dim`` up to ``length``."""
    missing = length - x.size(dim)
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def _pick(x: torch.Tensor | None, b: int, *, keep: tuple[int, int, int] | None = None) -> torch.Tensor | None:
    """Row ``b`` of an optional tensor, optionally narrowed by ``keep = (dim, start, length)``."""
    if x is None:
        return None
    x = x[b : b + 1]
    return x if keep is None else x.narrow(*keep)


A = TypeVar("A")  # the array type of a backend: torch.Tensor or numpy.ndarray


@dataclass
class CacheFields(Generic[A]):
    """The caches of B streams, shared by the torch and the ONNX state (shapes: :class:`StreamState`;
    the ONNX state's caches have the fixed exported length)."""

    offset: A
    att_cache: A
    cnn_cache: A
    cache_mask: A
    laf_cache: A | None = None
    fusion_cache: A | None = None
    post_sum: A | None = None

    @property
    def batch_size(self) -> int:
        return int(self.offset.shape[0])  # type: ignore[attr-defined]


@dataclass
class StreamState(CacheFields[torch.Tensor]):
    """Caches of B streams (torch tensors).

    Attributes:
        offset: (B,) frames (after sub-sampling) already output per stream.
        att_cache: (num_blocks,B,H,T_cache,2*d_k) encoder key/value cache.
        cnn_cache: (num_blocks,B,D,K-1) encoder causal-conv cache.
        cache_mask: (B,T_cache) bool, True = real cached frame (left padding is False).
        laf_cache: (B,L,K_laf-1,D) stacked block outputs of the last frames, or None (no LAF).
        fusion_cache: (B,T_cache,Dkv) key/value source frames of the fusion block, or None.
        post_sum: (B,A) sum of the frames' accent evidence so far (:func:`qifusion.models.aid.frame_evidence`:
            posteriors, or log-posteriors for logit pooling), or None (no AID).
        accents: (B,) oracle accent ids (-1 unknown), or None (only oracle_accent models).
    """

    accents: torch.Tensor | None = None

    def accent_posterior(self, pooling: str = "posterior") -> torch.Tensor | None:
        """Running utterance-level accent posterior (B,A) over the frames so far (``aid_pooling``)."""
        if self.post_sum is None:
            return None
        return pooled_posterior(self.post_sum, self.offset, pooling)

    @staticmethod
    def stack(states: list[StreamState]) -> StreamState:
        """Batch several states (each with any batch size) into one; caches are left-padded."""
        if not states:
            raise ValueError("StreamState.stack needs at least one state")
        t = max(s.cache_mask.size(1) for s in states)

        def cat_opt(
            xs: list[torch.Tensor | None], dim: int, pad_dim: int | None = None
        ) -> torch.Tensor | None:
            if any(x is None for x in xs):
                return None
            if pad_dim is not None:
                xs = [_left_pad(x, t, pad_dim) for x in xs]  # type: ignore[arg-type]
            return torch.cat(xs, dim=dim)  # type: ignore[arg-type]

        return StreamState(
            offset=torch.cat([s.offset for s in states]),
            att_cache=torch.cat([_left_pad(s.att_cache, t, 3) for s in states], dim=1),
            cnn_cache=torch.cat([s.cnn_cache for s in states], dim=1),
            cache_mask=torch.cat([_left_pad(s.cache_mask, t, 1) for s in states], dim=0),
            laf_cache=cat_opt([s.laf_cache for s in states], 0),
            fusion_cache=cat_opt([s.fusion_cache for s in states], 0, pad_dim=1),
            post_sum=cat_opt([s.post_sum for s in states], 0),
            accents=cat_opt([s.accents for s in states], 0),
        )

    def unstack(self) -> list[StreamState]:
        """Split into B single-stream states, dropping each stream's left padding."""
        out = []
        for b in range(self.batch_size):
            n = int(self.cache_mask[b].sum())
            t = self.cache_mask.size(1)
            sl = slice(t - n, t)

            out.append(
                replace(
                    self,
                    offset=self.offset[b : b + 1],
                    att_cache=self.att_cache[:, b : b + 1, :, sl],
                    cnn_cache=self.cnn_cache[:, b : b + 1],
                    cache_mask=self.cache_mask[b : b + 1, sl],
                    laf_cache=_pick(self.laf_cache, b),
                    fusion_cache=_pick(self.fusion_cache, b, keep=(1, t - n, n)),
                    post_sum=_pick(self.post_sum, b),
                    accents=_pick(self.accents, b),
                )
            )
        return out
