"""Narrowband detection: telephone-band audio (8 kHz sampling, or content cut off near 4 kHz).

The shipped models were trained on 16 kHz wideband speech; narrowband input is resampled but decodes
badly, so it is detected and reported. A recording is narrowband when its original sample rate is
below 16 kHz, or when the share of its energy above 4 kHz is below :data:`HF_NARROWBAND_DB` (dB
relative to the total energy; measured on dev speech and its 8 kHz copies by
``python -m benchmarks.ood.measure``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

WIDEBAND_RATE = 16000
CUTOFF_HZ = 4000.0
HF_NARROWBAND_DB = -50.0
MIN_ENERGY = 1e-8  # mean square below this: too quiet to judge the spectrum


@dataclass
class Bandwidth:
    """``input_rate``: the file's sample rate; ``hf_ratio_db``: energy above 4 kHz re total (dB)."""

    input_rate: int
    hf_ratio_db: float | None
    narrowband: bool
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def analyse_bandwidth(samples: np.ndarray, sample_rate: int, *, input_rate: int | None = None) -> Bandwidth:
    """Bandwidth of ``samples`` (N,) at ``sample_rate`` (>= 8 kHz); ``input_rate``: the original rate.

    The spectrum is the mean power spectrum of 512-sample Hann frames (numpy FFT).
    """
    rate_in = int(input_rate or sample_rate)
    x = np.asarray(samples, dtype=np.float64)
    ratio_db: float | None = None
    n = 512
    if x.size >= n and float(np.mean(x**2)) > MIN_ENERGY and sample_rate > 2 * CUTOFF_HZ:
        frames = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 2]
        power = (np.abs(np.fft.rfft(frames * np.hanning(n), axis=1)) ** 2).mean(axis=0)
        freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
        total = float(power[1:].sum())
        high = float(power[freqs > CUTOFF_HZ].sum())
        ratio_db = round(10 * np.log10(max(high, 1e-30) / max(total, 1e-30)), 2)
    if rate_in < WIDEBAND_RATE:
        return Bandwidth(rate_in, ratio_db, True, f"sample rate {rate_in} Hz is below 16 kHz")
    if ratio_db is not None and ratio_db < HF_NARROWBAND_DB:
        return Bandwidth(rate_in, ratio_db, True,
                         f"almost no energy above 4 kHz ({ratio_db:.1f} dB): telephone-band audio")
    return Bandwidth(rate_in, ratio_db, False)
