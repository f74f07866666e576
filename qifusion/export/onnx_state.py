"""Streaming state of the ONNX backend (:class:`~qifusion.export.onnx_backend.OnnxModel`): the
fixed-size caches of B streams as numpy arrays, batched by concatenation (every cache has the exported
length ``R = chunk_size * left_chunks``; ``cache_mask`` marks the real frames)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from qifusion.models.aid import pooled_posterior
from qifusion.models.state import CacheFields


@dataclass
class OnnxState(CacheFields[np.ndarray]):
    """Fixed-size caches of B streams (numpy); R = chunk_size * left_chunks. The fields are
    :class:`~qifusion.models.state.CacheFields`, the torch state's:

    offset (B,) frames output so far; att_cache (nb,B,H,R,2*d_k); cnn_cache (nb,B,D,K-1);
    cache_mask (B,R) bool, True = real cached frame; laf_cache (B,L,K-1,D) | None;
    fusion_cache (B,R,D_kv) | None; post_sum (B,A) float64 sum of the frames' accent evidence (posteriors,
    or log-posteriors for logit pooling: :func:`qifusion.models.aid.frame_evidence`) | None.
    """

    @staticmethod
    def stack(states: list[OnnxState]) -> OnnxState:
        """Batch states (caches have the same size, so this is a concatenation)."""
        def cat(xs: list[np.ndarray | None], axis: int) -> np.ndarray | None:
            return None if xs[0] is None else np.concatenate(xs, axis=axis)  # type: ignore[arg-type]

        return OnnxState(
            offset=np.concatenate([s.offset for s in states]),
            att_cache=np.concatenate([s.att_cache for s in states], axis=1),
            cnn_cache=np.concatenate([s.cnn_cache for s in states], axis=1),
            cache_mask=np.concatenate([s.cache_mask for s in states]),
            laf_cache=cat([s.laf_cache for s in states], 0),
            fusion_cache=cat([s.fusion_cache for s in states], 0),
            post_sum=cat([s.post_sum for s in states], 0),
        )

    def unstack(self) -> list[OnnxState]:
        """Split into B single-stream states."""
        def pick(x: np.ndarray | None, b: int) -> np.ndarray | None:
            return None if x is None else x[b : b + 1]

        return [
            replace(self, offset=self.offset[b : b + 1], att_cache=self.att_cache[:, b : b + 1],
                    cnn_cache=self.cnn_cache[:, b : b + 1], cache_mask=self.cache_mask[b : b + 1],
                    laf_cache=pick(self.laf_cache, b), fusion_cache=pick(self.fusion_cache, b),
                    post_sum=pick(self.post_sum, b))
            for b in range(self.batch_size)
        ]

    def accent_posterior(self, pooling: str = "posterior") -> np.ndarray | None:
        """Running utterance posterior (B,A), as :func:`qifusion.models.aid.pooled_posterior`."""
        if self.post_sum is None:
            return None
        utt = pooled_posterior(torch.from_numpy(self.post_sum), torch.from_numpy(self.offset), pooling)
        return utt.numpy()
