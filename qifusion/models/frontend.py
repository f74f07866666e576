"""Encoder front end: global CMVN, convolutional sub-sampling, relative positional encoding.

- :class:`GlobalCMVN` keeps the training-set mean / inverse std as buffers, so the model takes raw
  fbank and the normalisation travels with checkpoints and exports.
- :class:`Conv2dSubsampling`: progressive 2-D convolutional sub-sampling as in the Conformer paper
  (Gulati et al., 2020) and U2: x4 = two (3x3, stride 2) stages, x6 = (3x3, 2) then (5x5, 3), x8 = three
  (3x3, 2) stages. No padding in time, so output frame ``j`` reads exactly input frames
  ``rate*j .. rate*j + right_context`` and a chunk of ``c`` outputs needs
  ``(c-1)*rate + right_context + 1`` input frames.
- :class:`RelPositionalEncoding`: sinusoidal embeddings of the *relative distance* ``i - j``
  (Transformer-XL, Dai et al., 2019), so attention results do not depend on the absolute offset of a
  chunk in the stream.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qifusion.config import ConfigError
from qifusion.models.mask import lengths_to_mask, subsampled_lengths

__all__ = ["Conv2dSubsampling", "GlobalCMVN", "RelPositionalEncoding"]

# (kernel, stride) per stage for each sub-sampling variant
_STAGES: dict[str, list[tuple[int, int]]] = {
    "conv2d4": [(3, 2), (3, 2)],
    "conv2d6": [(3, 2), (5, 3)],
    "conv2d8": [(3, 2), (3, 2), (3, 2)],
}


class GlobalCMVN(nn.Module):
    """``(max(x, floor) - mean) * istd`` over the feature axis; stats are buffers (saved with the state dict).

    ``floor`` (F,) is the log-mel level of the training dither on digital silence (-inf = none): training
    features are dithered, decoding features are not, so without it the exact zeros that synthetic or
    gated audio holds reach the model at the log floor (about -15.9), far below anything it trained on.
    Models saved before the floor existed load with -inf (unchanged behaviour).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("istd", torch.ones(dim))
        self.register_buffer("floor", torch.full((dim,), float("-inf")))

    @torch.no_grad()
    def set_stats(self, mean: torch.Tensor, istd: torch.Tensor, floor: torch.Tensor | None = None) -> None:
        """Copy (F,) mean, inverse standard deviation and (optional) input floor into the buffers."""
        mean = torch.as_tensor(mean).reshape(-1)
        istd = torch.as_tensor(istd).reshape(-1)
        fl = torch.full_like(self.floor, -math.inf) if floor is None else torch.as_tensor(floor).reshape(-1)
        dim = self.mean.numel()
        if mean.numel() != dim or istd.numel() != dim or fl.numel() != dim:
            raise ConfigError(
                f"CMVN stats have {mean.numel()}/{istd.numel()}/{fl.numel()} dims, "
                f"model.encoder.input_dim is {dim}"
            )
        self.mean.copy_(mean)
        self.istd.copy_(istd)
        self.floor.copy_(fl)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,  # type: ignore[no-untyped-def]
                              unexpected_keys, error_msgs) -> None:
        if prefix + "mean" in state_dict and prefix + "floor" not in state_dict:  # saved before the floor
            state_dict[prefix + "floor"] = torch.full_like(self.floor, float("-inf"))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, F) -> (B, T, F)."""
        return (torch.maximum(x, self.floor) - self.mean) * self.istd


class Conv2dSubsampling(nn.Module):
    """Progressive conv sub-sampling (x4, x6 or x8) with ``channels`` channels (0 = ``odim``) followed by a
    linear projection to ``odim``.

    Attributes:
        subsampling_rate: time reduction factor.
        right_context: input frames beyond ``rate*j`` that output frame ``j`` reads.
    """

    def __init__(self, idim: int, odim: int, kind: str = "conv2d4", *, scale: bool = False,
                 channels: int = 0) -> None:
        super().__init__()
        if channels < 0:
            raise ConfigError(f"config key 'model.encoder.subsampling_channels' must be >= 0, got {channels}")
        ch = channels or odim
        # WeNet/ESPnet scale the projected embedding by sqrt(d_model) before the blocks (the Transformer's
        # embedding scale): with pre-LN blocks it sets how much the input counts against each residual
        self.xscale = math.sqrt(odim) if scale else 1.0
        if kind not in _STAGES:
            raise ConfigError(
                f"config key 'model.encoder.subsampling' must be one of {sorted(_STAGES)}, got {kind!r}"
            )
        stages = _STAGES[kind]
        freq, rate, right_context = idim, 1, 0
        for kernel, stride in stages:
            right_context += (kernel - 1) * rate
            rate *= stride
            freq = (freq - kernel) // stride + 1
        if freq < 1:
            raise ConfigError(f"model.encoder.input_dim={idim} is too small for {kind} sub-sampling")
        (k0, s0), rest = stages[0], stages[1:]
        self.conv_in = nn.Conv2d(1, ch, k0, s0)
        self.convs = nn.ModuleList(nn.Conv2d(ch, ch, k, s) for k, s in rest)
        self.out = nn.Linear(ch * freq, odim)
        self.subsampling_rate = rate
        self.right_context = right_context
        self._cl_weights: list[tuple[tuple, torch.Tensor] | None] = [None] * len(self.convs)

    def _conv(self, i: int, y: torch.Tensor) -> torch.Tensor:
        """``self.convs[i](y)`` for channels-last ``y``. Without autograd (inference), the weight is kept
        in channels-last memory too (rebuilt when it changes): the mkldnn kernel would otherwise convert
        it on every call (~1 ms for 256 channels, the same numbers)."""
        conv = self.convs[i]
        if torch.is_grad_enabled() or torch.compiler.is_exporting():
            return conv(y)
        w = conv.weight
        try:
            version = w._version
        except RuntimeError:  # inference tensor: no version counter
            version = -1
        key = (w.data_ptr(), version, w.dtype, w.device)
        cache = self.__dict__.setdefault("_cl_weights", [None] * len(self.convs))  # old pickles lack it
        cached = cache[i]
        if cached is None or cached[0] != key:
            cached = cache[i] = (key, w.detach().contiguous(memory_format=torch.channels_last))
        return F.conv2d(y, cached[1], conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def output_length(self, num_frames: int) -> int:
        """Number of output frames for ``num_frames`` input frames."""
        return max((num_frames - self.right_context - 1) // self.subsampling_rate + 1, 0)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sub-sample.

        Args:
            x: (B, T, F) normalised features.
            lengths: (B,) valid input frames, or None.

        Returns:
            (B, T', D) features and (B, T') bool valid mask (None when ``lengths`` is None).
        """
        n_frames = x.size(1)
        if n_frames <= self.right_context:
            raise ValueError(
                f"input has {n_frames} frames; the x{self.subsampling_rate} front end needs at least "
                f"{self.right_context + 1}"
            )
        # first stage (1 input channel) as patches @ weight: much faster than a 1-channel conv on CPU,
        # and it leaves channels last, the layout the next (mkldnn) convs prefer
        k0, s0 = self.conv_in.kernel_size[0], self.conv_in.stride[0]
        patches = x.unfold(1, k0, s0).unfold(2, k0, s0)  # (B, T1, F1, k, k)
        B, T1, F1 = patches.shape[:3]
        w = self.conv_in.weight.view(self.conv_in.out_channels, k0 * k0)
        y = torch.relu(F.linear(patches.reshape(B, T1, F1, k0 * k0), w, self.conv_in.bias))
        y = y.permute(0, 3, 1, 2)  # (B, C, T1, F1), channels-last memory
        for i in range(len(self.convs)):
            y = torch.relu(self._conv(i, y))
        B, C, Tp, Fp = y.shape
        y = self.out(y.transpose(1, 2).reshape(B, Tp, C * Fp))
        if self.xscale != 1.0:
            y = y * self.xscale
        if lengths is None:
            return y, None
        out_lens = subsampled_lengths(lengths, rate=self.subsampling_rate, right_context=self.right_context)
        return y, lengths_to_mask(out_lens, Tp)


class RelPositionalEncoding(nn.Module):
    """Sinusoidal embeddings of relative distances (Transformer-XL style).

    ``forward(q_len, k_len)`` returns embeddings for distances ``k_len-1, k_len-2, ..., -q_len``
    (descending, ``q_len + k_len`` rows), where queries are the last ``q_len`` of ``k_len`` keys. The
    attention module turns this into per-pair scores for ``i - j``; see
    :func:`qifusion.models.attention.rel_shift`.
    """

    def __init__(self, d_model: int, dropout_rate: float = 0.0, init_len: int = 1024) -> None:
        super().__init__()
        self.d_model = d_model
        self.dropout = nn.Dropout(dropout_rate)
        # a plain attribute, not a buffer: it may grow on demand, and a buffer of rank-dependent size
        # would break DDP's buffer broadcast; casts are cached per (device, dtype)
        self.max_dist = 0
        self._pe = torch.empty(0, d_model, dtype=torch.float64)
        self._cast: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._extend(init_len)

    def _extend(self, max_dist: int) -> None:
        """Build the table for distances ``max_dist .. -max_dist`` (row ``r`` = distance max_dist - r)."""
        dist = torch.arange(max_dist, -max_dist - 1, -1, dtype=torch.float64).unsqueeze(1)
        inv_freq = torch.exp(
            torch.arange(0, self.d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / self.d_model)
        )
        pe = torch.zeros(2 * max_dist + 1, self.d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(dist * inv_freq)
        pe[:, 1::2] = torch.cos(dist * inv_freq)[:, : self.d_model // 2]
        self._pe = pe
        self._cast = {}
        self.max_dist = max_dist

    def forward(self, q_len: int, k_len: int, *, like: torch.Tensor) -> torch.Tensor:
        """Returns (q_len + k_len, D) embeddings of distances ``k_len-1 .. -q_len``, on ``like``'s
        device and dtype."""
        if max(k_len - 1, q_len) > self.max_dist:
            self._extend(max(k_len, q_len) * 2)
        key = (like.device, like.dtype)
        table = self._cast.get(key)
        if table is None:
            table = self._cast[key] = self._pe.to(device=like.device, dtype=like.dtype)
        start = self.max_dist - (k_len - 1)
        return self.dropout(table[start : start + q_len + k_len])
