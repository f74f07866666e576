"""80-dim Kaldi-compatible log-mel filterbank, identical offline (training) and online (streaming).

Both paths run kaldi-native-fbank's ``OnlineFbank`` with the options sherpa-onnx uses for WeNet CTC
models (``sherpa-onnx/csrc/features.{h,cc}`` and ``online-recognizer-ctc-impl.h``, which sets
``normalize_samples = false`` for WeNet models), so an exported model runs there unchanged:

* samples in [-1, 1] are scaled to the int16 range (``x * 32768``) before the fbank;
* 16 kHz, 25 ms window, 10 ms shift, povey window, pre-emphasis 0.97, DC removal (Kaldi defaults);
* 80 mel bins, ``low_freq = 20`` Hz, ``high_freq = -400`` (7600 Hz at 16 kHz), ``snip_edges = False``;
* no dither at decoding time. In training ``dither`` adds ``dither * N(0, 1)`` to the int16-scale
  samples (Kaldi's dither unit), drawn from a caller-given ``numpy`` Generator so that results are a
  function of (seed, epoch, utterance) rather than of a library's hidden random state.

Other input rates are resampled to 16 kHz with ``soxr.ResampleStream`` in both paths (the streaming
resampler gives the same samples whether fed at once or in pieces), so offline == online holds there
too. CMVN helpers live in :mod:`qifusion.data.cmvn` and are re-exported here.
"""

from __future__ import annotations

import kaldi_native_fbank as knf
import numpy as np
import soxr
import torch

from qifusion.errors import DataError

__all__ = [
    "FEATURE_SAMPLE_RATE",
    "INT16_SCALE",
    "OnlineFbank",
    "compute_fbank",
    "fbank_options",
]

FEATURE_SAMPLE_RATE = 16000
INT16_SCALE = 32768.0
LOW_FREQ = 20.0
HIGH_FREQ = -400.0
RESAMPLE_QUALITY = "HQ"


def fbank_options(*, num_mel_bins: int = 80, sample_rate: int = FEATURE_SAMPLE_RATE) -> knf.FbankOptions:
    """kaldi-native-fbank options equal to sherpa-onnx's feature extractor for WeNet CTC models.

    Dither is always 0 here: training dither is added to the samples by :func:`compute_fbank`.
    """
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = float(sample_rate)
    opts.frame_opts.frame_length_ms = 25.0
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = False
    opts.frame_opts.window_type = "povey"
    opts.frame_opts.remove_dc_offset = True
    opts.frame_opts.preemph_coeff = 0.97
    opts.mel_opts.num_bins = num_mel_bins
    opts.mel_opts.low_freq = LOW_FREQ
    opts.mel_opts.high_freq = HIGH_FREQ
    opts.use_energy = False
    return opts


def _as_float32(samples: np.ndarray | torch.Tensor | list[float]) -> np.ndarray:
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise DataError(f"fbank expects 1-D mono samples, got shape {tuple(x.shape)}")
    return x


def _new_resampler(in_rate: int) -> soxr.ResampleStream:
    return soxr.ResampleStream(in_rate, FEATURE_SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)


def _stack(fbank: knf.OnlineFbank, start: int, count: int, dim: int) -> torch.Tensor:
    if count == 0:
        return torch.zeros(0, dim)
    return torch.from_numpy(np.stack([fbank.get_frame(i) for i in range(start, start + count)]))


def compute_fbank(
    samples: np.ndarray | torch.Tensor,
    *,
    sample_rate: int = FEATURE_SAMPLE_RATE,
    num_mel_bins: int = 80,
    dither: float = 0.0,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """Fbank of a whole utterance.

    Args:
        samples: (N,) float mono samples in [-1, 1] at ``sample_rate`` Hz (resampled to 16 kHz).
        dither: std of Gaussian noise added at int16 scale (training only; 0 = none).
        rng: the Generator that draws the dither noise (a fresh unseeded one if None).

    Returns:
        (T, num_mel_bins) float32 tensor, T = round(N16 / 160) frames for N16 samples at 16 kHz
        (``snip_edges=False``).
    """
    x = _as_float32(samples)
    if sample_rate != FEATURE_SAMPLE_RATE:
        x = _new_resampler(sample_rate).resample_chunk(x, last=True)
    x = x * np.float32(INT16_SCALE)
    if dither > 0.0:
        gen = rng if rng is not None else np.random.default_rng()
        x = x + np.float32(dither) * gen.standard_normal(x.shape[0], dtype=np.float32)
    fbank = knf.OnlineFbank(fbank_options(num_mel_bins=num_mel_bins))
    fbank.accept_waveform(float(FEATURE_SAMPLE_RATE), x)
    fbank.input_finished()
    return _stack(fbank, 0, fbank.num_frames_ready, num_mel_bins)


class OnlineFbank:
    """Streaming fbank (no dither) giving the same frames as :func:`compute_fbank`.

    Feed audio with :meth:`accept_waveform` in pieces of any size, call :meth:`input_finished` at the
    end (flushes the last frames, as ``snip_edges=False`` needs the whole signal's end), and read
    frames with :meth:`get_frames` (absolute frame indices). :meth:`pop` discards old frames to bound
    memory on long audio.
    """

    def __init__(self, num_mel_bins: int = 80) -> None:
        self.num_mel_bins = num_mel_bins
        self._fbank = knf.OnlineFbank(fbank_options(num_mel_bins=num_mel_bins))
        self._resampler: soxr.ResampleStream | None = None
        self._in_rate: int | None = None
        self._finished = False
        self._popped = 0

    def accept_waveform(self, sample_rate: int, samples: np.ndarray | torch.Tensor) -> None:
        """Append (N,) float samples in [-1, 1] at ``sample_rate`` Hz (constant over the stream)."""
        if self._finished:
            raise RuntimeError("accept_waveform() called after input_finished()")
        sample_rate = int(sample_rate)
        if self._in_rate is None:
            self._in_rate = sample_rate
            if sample_rate != FEATURE_SAMPLE_RATE:
                self._resampler = _new_resampler(sample_rate)
        elif sample_rate != self._in_rate:
            raise DataError(f"sample rate changed within a stream: {self._in_rate} -> {sample_rate} Hz")
        x = _as_float32(samples)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        if x.size:
            self._fbank.accept_waveform(float(FEATURE_SAMPLE_RATE), x * np.float32(INT16_SCALE))

    def input_finished(self) -> None:
        """No more audio: flush the resampler and the last frames."""
        if self._finished:
            return
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if tail.size:
                self._fbank.accept_waveform(float(FEATURE_SAMPLE_RATE), tail * np.float32(INT16_SCALE))
        self._fbank.input_finished()
        self._finished = True

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def num_frames_ready(self) -> int:
        """Total frames computed so far (absolute count, popped frames included)."""
        return int(self._fbank.num_frames_ready)

    def get_frames(self, start: int, count: int) -> torch.Tensor:
        """Frames ``start .. start+count-1`` as a (count, num_mel_bins) float32 tensor."""
        if start < self._popped or start + count > self.num_frames_ready or count < 0:
            raise IndexError(
                f"frames [{start}, {start + count}) not available (popped before {self._popped}, "
                f"{self.num_frames_ready} ready)"
            )
        return _stack(self._fbank, start, count, self.num_mel_bins)

    def pop(self, frame: int) -> None:
        """Discard every frame before absolute index ``frame`` (they can no longer be read)."""
        n = min(frame, self.num_frames_ready) - self._popped
        if n > 0:
            self._fbank.pop(n)
            self._popped += n
