"""Training augmentation whose randomness is a pure function of (seed, epoch, utterance id).

Every random choice for one utterance in one epoch is drawn from :func:`utt_rng`, a numpy Generator
seeded by ``(seed, epoch, crc32(utt_id))``. Results therefore do not depend on DataLoader worker
seeds, on the number of workers, on batch order or on where a resumed run restarts: the property
exact resume needs (issue 4).

* Speed perturbation as sox's ``speed`` effect (and lhotse's ``Speed`` transform): treat the samples
  as recorded at ``sr * factor`` and resample them to ``sr`` (soxr, the sox resampler; deterministic
  and single-threaded), so ``factor`` 1.1 gives ~1/1.1 as many samples, higher pitch.
* SpecAugment (Park et al. 2019) frequency and time masks on the (T, F) fbank. lhotse's
  ``SpecAugment`` draws from Python's global ``random``, so the masks are drawn here from the
  utterance's Generator instead; like lhotse, masked cells get the utterance's feature mean (the
  features are raw log-mel, CMVN is applied inside the model). Time warping is not applied.
* Vocal-tract-length perturbation (VTLP; Jaitly & Hinton 2013): the fbank's frequency axis scaled by a
  factor drawn per utterance, a speaker with a longer or shorter vocal tract, formants moved without
  the tempo change that speed perturbation brings; for corpora with few speakers.
* Silence padding: random stretches of near-silence before and after the speech, so the model learns
  to emit blanks over pauses longer than the few hundred ms a corpus' utterances start and end with
  (endpoint detection in streaming and long-audio decoding relies on blank-dominated pauses).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import soxr
import torch

from qifusion.config import DataConfig, SpecAugConfig
from qifusion.data.features import HIGH_FREQ, LOW_FREQ

MAX_TIME_MASK_FRACTION = 0.2  # one time mask covers at most this share of the frames


def utt_rng(seed: int, epoch: int, utt_id: str) -> np.random.Generator:
    """The Generator for every random choice about ``utt_id`` in ``epoch`` (PCG64)."""
    key = zlib.crc32(utt_id.encode("utf-8"))
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, key])))


def choose_speed(factors: Sequence[float], rng: np.random.Generator) -> float:
    """One factor of ``factors`` uniformly (1.0 when the list is empty)."""
    if not factors:
        return 1.0
    return float(factors[int(rng.integers(len(factors)))])


def speed_perturb(samples: np.ndarray, factor: float, *, sample_rate: int = 16000) -> np.ndarray:
    """(N,) float32 -> (~N / factor,) float32: tempo and pitch scaled by ``factor`` (sox ``speed``)."""
    if factor == 1.0:
        return samples
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    x = np.asarray(samples, dtype=np.float32)
    out = soxr.resample(x, sample_rate * factor, sample_rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def draw_padding(
    *, max_seconds: float, prob: float, rng: np.random.Generator, sample_rate: int = 16000
) -> tuple[np.ndarray, np.ndarray]:
    """(lead, trail), each (n,) float32: with probability ``prob`` each, U(0, max_seconds) of low-level noise
    (-70..-50 dBFS RMS), else empty. The draws of :func:`pad_silence`, in its order."""
    sides = []
    for _ in range(2):
        if max_seconds <= 0 or rng.random() >= prob:
            sides.append(np.zeros(0, dtype=np.float32))
            continue
        n = int(rng.uniform(0.0, max_seconds) * sample_rate)
        level = 10.0 ** (rng.uniform(-70.0, -50.0) / 20.0)
        sides.append((rng.standard_normal(n) * level).astype(np.float32))
    return sides[0], sides[1]


def pad_silence(
    samples: np.ndarray,
    *,
    max_seconds: float,
    prob: float,
    rng: np.random.Generator,
    sample_rate: int = 16000,
) -> np.ndarray:
    """(N,) -> (N + lead + trail,): :func:`draw_padding`'s noise before and after ``samples``."""
    x = np.asarray(samples, dtype=np.float32)
    lead, trail = draw_padding(max_seconds=max_seconds, prob=prob, rng=rng, sample_rate=sample_rate)
    return x if lead.size == 0 and trail.size == 0 else np.concatenate([lead, x, trail])


def draw_stretch(cfg: DataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """(lead, trail, factor): an utterance's silence padding (:func:`draw_padding`) and speed factor
    (:func:`choose_speed`), the first draws from its :func:`utt_rng` in every training pipeline."""
    lead, trail = draw_padding(max_seconds=cfg.silence_pad_max, prob=cfg.silence_pad_prob, rng=rng,
                               sample_rate=cfg.sample_rate)
    return lead, trail, choose_speed(cfg.speed_perturb, rng)


def augmented_seconds(duration: float, *, cfg: DataConfig, seed: int, epoch: int, utt_id: str) -> float:
    """Seconds that ``utt_id`` (``duration`` s) will last in training ``epoch``: this epoch's
    :func:`draw_stretch`, replayed, so the sampler can bucket by the lengths the model will see
    (``data.bucket_augmented``)."""
    lead, trail, factor = draw_stretch(cfg, utt_rng(seed, epoch, utt_id))
    return (duration + (lead.size + trail.size) / cfg.sample_rate) / factor


def _mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(hz / 700.0)


def vtlp_warp(feats: torch.Tensor, alpha: float, *, sample_rate: int = 16000) -> torch.Tensor:
    """(T, F) log-mel fbank -> (T, F): the fbank of a speaker whose spectrum is scaled by ``alpha``
    (vocal-tract-length perturbation, Jaitly & Hinton 2013, done on the filterbank): bin i takes the
    value, interpolated between bins, at frequency ``center_i / alpha`` (edge bins repeat). The bin centres
    are those of :mod:`qifusion.data.features` (``LOW_FREQ`` .. ``sample_rate / 2 + HIGH_FREQ``)."""
    if alpha == 1.0:
        return feats
    if alpha <= 0:
        raise ValueError(f"VTLP factor must be > 0, got {alpha}")
    d = feats.shape[1]
    lo, hi = _mel(np.array(LOW_FREQ)), _mel(np.array(sample_rate / 2 + HIGH_FREQ))
    step = (hi - lo) / (d + 1)
    centers_hz = 700.0 * np.expm1((lo + step * np.arange(1, d + 1)) / 1127.0)
    src = np.clip((_mel(centers_hz / alpha) - lo) / step - 1, 0, d - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, d - 1)
    w = torch.from_numpy(src - i0).to(feats.dtype)
    return feats[:, i0] * (1 - w) + feats[:, i1] * w


def choose_vtlp(max_factor: float, rng: np.random.Generator) -> float:
    """A warp factor log-uniform in [1 / max_factor, max_factor] (1.0, no draw, when ``max_factor`` is 1)."""
    if max_factor == 1.0:
        return 1.0
    return float(np.exp(rng.uniform(-np.log(max_factor), np.log(max_factor))))


def spec_augment(feats: torch.Tensor, cfg: SpecAugConfig, rng: np.random.Generator) -> torch.Tensor:
    """Frequency and time masks on ``feats`` (T, F); returns a new tensor (input left unchanged).

    ``cfg.num_freq_masks`` bands of width U{0..max_freq_width} and ``cfg.num_time_masks`` spans of
    width U{0..min(max_time_width, 20% of T)}, filled with the utterance mean.
    """
    out = feats.clone()
    T, F = out.shape
    if T == 0:
        return out
    fill = float(out.mean())
    for _ in range(cfg.num_freq_masks):
        width = int(rng.integers(0, min(cfg.max_freq_width, F) + 1))
        start = int(rng.integers(0, F - width + 1))
        out[:, start : start + width] = fill
    max_t = min(cfg.max_time_width, int(T * MAX_TIME_MASK_FRACTION))
    for _ in range(cfg.num_time_masks):
        width = int(rng.integers(0, max_t + 1))
        start = int(rng.integers(0, T - width + 1))
        out[start : start + width, :] = fill
    return out


def augment_features(feats: torch.Tensor, *, cfg: DataConfig, rng: np.random.Generator,
                     epoch: int) -> torch.Tensor:
    """(T, F) -> (T, F): VTLP (``cfg.vtlp``), then SpecAugment from epoch ``cfg.spec_aug.start_epoch`` on:
    the feature-domain steps of training augmentation, drawn from ``rng`` in this order."""
    feats = vtlp_warp(feats, choose_vtlp(cfg.vtlp, rng), sample_rate=cfg.sample_rate)
    if cfg.spec_aug.enabled and epoch >= cfg.spec_aug.start_epoch:
        feats = spec_augment(feats, cfg.spec_aug, rng)
    return feats
