"""Chunk geometry of streaming: how many fbank frames one chunk reads, how far the window moves, how
much history the caches keep. The window formula lives here and nowhere else.

Following WeNet's ``forward_chunk_by_chunk``: a chunk of ``chunk_size`` output frames reads
``(chunk_size - 1) * subsampling + right_context + 1`` fbank frames and the window advances by
``subsampling * chunk_size``; the last, shorter chunk of an utterance reads what is left (at least
``right_context + 1`` frames). The caches keep ``chunk_size * left_chunks`` output frames of history
(all of it when ``left_chunks < 0``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_CHUNK", "ChunkGeometry"]

DEFAULT_CHUNK = 16  # output frames per streaming chunk when none is given (serve, export, transcribe)


@dataclass(frozen=True)
class ChunkGeometry:
    """One streaming chunk of a model with sub-sampling ``subsampling`` and ``right_context`` frames.

    ``chunk_size`` > 0 output frames; ``left_chunks`` < 0 keeps all history, >= 0 that many chunks.
    """

    chunk_size: int
    left_chunks: int
    subsampling: int
    right_context: int

    def __post_init__(self) -> None:
        if self.chunk_size <= 0:
            raise ValueError(f"streaming needs a positive chunk size, got chunk_size={self.chunk_size}")

    @property
    def context(self) -> int:
        """Fbank frames needed for one output frame."""
        return self.right_context + 1

    @property
    def window(self) -> int:
        """Fbank frames one full chunk reads."""
        return (self.chunk_size - 1) * self.subsampling + self.context

    @property
    def stride(self) -> int:
        """Fbank frames the window advances per chunk."""
        return self.subsampling * self.chunk_size

    @property
    def cache_frames(self) -> int:
        """Output frames of history the caches keep: ``chunk_size * left_chunks``, or -1 for all."""
        return self.chunk_size * self.left_chunks if self.left_chunks >= 0 else -1

    @property
    def frame_shift(self) -> float:
        """Seconds per output frame (10 ms fbank frames)."""
        return 0.01 * self.subsampling

    def output_frames(self, input_frames: int) -> int:
        """Output frames of a chunk of ``input_frames`` fbank frames (0 when it is too short)."""
        return max((input_frames - self.right_context - 1) // self.subsampling + 1, 0)

    def next_chunk(self, available: int, *, finished: bool) -> int:
        """Fbank frames of the next chunk when ``available`` frames are waiting (0 = none yet): a full
        window, or after the end of input whatever is left if it makes at least one output frame."""
        if available >= self.window:
            return self.window
        if finished and available >= self.context:
            return available
        return 0
