"""Padding masks, chunk masks and the dynamic chunk policy of U2/U2++.

Chunk-based attention (Zhang et al., "Unified Streaming and Non-streaming Two-pass End-to-end Model",
U2, 2020, and U2++, 2021): frame ``i`` of chunk ``i // C`` may attend to every frame of its own chunk
and of up to ``left_chunks`` chunks before it (all of them when ``left_chunks < 0``). Training draws the
chunk size per batch, so one model serves full-context and streaming decoding.

All masks are ``bool`` with ``True`` = may attend / is valid.
"""

from __future__ import annotations

import torch

__all__ = ["chunk_mask", "dynamic_chunk", "lengths_to_mask", "subsampled_lengths"]


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Valid-frame mask from lengths.

    Args:
        lengths: (B,) int lengths.
        max_len: mask length (default ``lengths.max()``).

    Returns:
        (B, max_len) bool, ``True`` for frames ``t < lengths[b]``.
    """
    if max_len is None:
        max_len = int(lengths.max().item()) if lengths.numel() else 0
    t = torch.arange(max_len, device=lengths.device)
    return t.unsqueeze(0) < lengths.unsqueeze(1)


def subsampled_lengths(lengths: torch.Tensor, *, rate: int, right_context: int) -> torch.Tensor:
    """Number of sub-sampled frames whose whole receptive field lies inside ``lengths`` input frames.

    Output frame ``j`` of a front end with sub-sampling ``rate`` and ``right_context`` reads input
    frames ``rate*j .. rate*j + right_context``.

    Args:
        lengths: (B,) int input lengths.

    Returns:
        (B,) int output lengths (0 for inputs shorter than ``right_context + 1``).
    """
    return torch.clamp(torch.div(lengths - right_context - 1, rate, rounding_mode="floor") + 1, min=0)


def chunk_mask(
    size: int, chunk_size: int, left_chunks: int = -1, *, device: torch.device | None = None
) -> torch.Tensor:
    """Chunk attention mask.

    Args:
        size: number of frames T'.
        chunk_size: frames per chunk; ``<= 0`` means full context (all ``True``).
        left_chunks: chunks of history visible besides the current one; ``< 0`` = all.

    Returns:
        (T', T') bool; ``[i, j]`` is ``True`` when query ``i`` may attend to key ``j``.
    """
    if chunk_size <= 0 or (chunk_size >= size and left_chunks < 0):
        return torch.ones(size, size, dtype=torch.bool, device=device)
    idx = torch.arange(size, device=device)
    chunk_idx = torch.div(idx, chunk_size, rounding_mode="floor")
    end = (chunk_idx + 1) * chunk_size  # exclusive end of the query's chunk
    mask = idx.unsqueeze(0) < end.unsqueeze(1)
    if left_chunks >= 0:
        start = (chunk_idx - left_chunks).clamp(min=0) * chunk_size
        mask &= idx.unsqueeze(0) >= start.unsqueeze(1)
    return mask


def dynamic_chunk(
    num_frames: int,
    *,
    training: bool,
    use_dynamic_chunk: bool,
    use_dynamic_left_chunk: bool,
    max_chunk: int,
    static_chunk_size: int,
) -> tuple[int, int]:
    """Choose ``(chunk_size, left_chunks)`` for one batch (U2/U2++ dynamic chunk training).

    - ``static_chunk_size > 0``: always that chunk size with all history.
    - training with ``use_dynamic_chunk``: with probability 1/2 full context ``(-1, -1)``, otherwise a
      chunk size uniform in ``1..max_chunk`` and, with ``use_dynamic_left_chunk``, a number of left
      chunks uniform in ``0..(num_frames-1)//chunk`` (else all history).
    - otherwise full context.

    Randomness comes from torch's global RNG (``torch.randint``), so saving/restoring the RNG state in a
    checkpoint makes a resumed run draw the same chunks.
    """
    if static_chunk_size > 0:
        return static_chunk_size, -1
    if not (training and use_dynamic_chunk):
        return -1, -1
    if int(torch.randint(0, 2, (1,)).item()) == 0:
        return -1, -1
    chunk = int(torch.randint(1, max_chunk + 1, (1,)).item())
    left = -1
    if use_dynamic_left_chunk:
        max_left = max((num_frames - 1) // chunk, 0)
        left = int(torch.randint(0, max_left + 1, (1,)).item())
    return chunk, left
