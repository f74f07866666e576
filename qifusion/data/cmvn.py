"""Global CMVN statistics (mean and inverse std per feature dim) from training features.

The model applies them inside its graph (``ConformerEncoder.set_cmvn``), so they travel with a
model dir and with an ONNX export. Stored as ``cmvn.json``::

    {"mean": [...], "istd": [...], "frame_num": N, "floor": [...]}

``floor`` (optional, absent for models trained before it) is the per-bin input floor of
:class:`qifusion.models.frontend.GlobalCMVN`: the level of the training dither on digital silence, so
undithered decoding input never drops below what training saw (see :func:`dither_floor`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from qifusion.errors import DataError, UserError
from qifusion.fileio import atomic_write_text

if TYPE_CHECKING:
    from qifusion.data.manifest import Utterance

CMVN_FILE = "cmvn.json"
MIN_VARIANCE = 1e-20


def compute_cmvn(feature_iter: Iterable[torch.Tensor | np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Global mean and inverse std over all frames of ``feature_iter`` (each (T, F)).

    Accumulates in float64. Returns (mean (F,), istd (F,)) float32 tensors.
    """
    total: np.ndarray | None = None
    total_sq: np.ndarray | None = None
    count = 0
    for feats in feature_iter:
        x = feats.detach().cpu().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats)
        x = x.astype(np.float64, copy=False)
        if x.ndim != 2:
            raise ValueError(f"compute_cmvn expects (T, F) features, got shape {x.shape}")
        if total is None:
            total = np.zeros(x.shape[1])
            total_sq = np.zeros(x.shape[1])
        total += x.sum(axis=0)
        total_sq += (x * x).sum(axis=0)  # type: ignore[operator]
        count += x.shape[0]
    if total is None or total_sq is None or count == 0:
        raise DataError("cannot compute CMVN: no feature frames (is the training set empty?)")
    mean = total / count
    var = np.maximum(total_sq / count - mean * mean, MIN_VARIANCE)
    istd = 1.0 / np.sqrt(var)
    return torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(istd.astype(np.float32))


FLOOR_SECONDS = 10.0  # of dithered digital silence measured by dither_floor
FLOOR_STDS = 1.5  # the floor sits this many standard deviations below the dithered-silence mean


def dither_floor(dither: float, *, num_mel_bins: int = 80, seed: int = 0) -> torch.Tensor | None:
    """(F,) input floor for a model trained with ``dither``: per-bin mean - 1.5 std of the fbank of
    10 s of digital silence dithered the way training dithers (None when ``dither`` is 0).

    Measured on this feature set with dither 1: digital silence sits at -15.9 in every bin while
    dithered silence averages -2.8..8.4 per bin (std ~0.8), so an undithered zero stretch at decoding
    time would be ~20 units below anything the model trained on.
    """
    if dither <= 0:
        return None
    from qifusion.data.features import compute_fbank

    zeros = np.zeros(int(FLOOR_SECONDS * 16000), dtype=np.float32)
    f = compute_fbank(zeros, num_mel_bins=num_mel_bins, dither=dither, rng=np.random.default_rng(seed))
    return (f.mean(0) - FLOOR_STDS * f.std(0)).float()


def cmvn_from_utterances(
    utts: Sequence[Utterance],
    *,
    num_mel_bins: int = 80,
    sample_rate: int = 16000,
    max_utts: int = 0,
    floor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """CMVN over the (undithered) fbank of ``utts`` (the first ``max_utts`` if > 0), clamped below at
    ``floor`` (F,) first when given, as the model's input is.

    Unreadable utterances are skipped. Returns (mean (F,), istd (F,), number of utterances skipped).
    """
    from qifusion.data.audio import read_audio
    from qifusion.data.features import compute_fbank

    chosen = list(utts[:max_utts] if max_utts > 0 else utts)
    skipped = 0

    def feats() -> Iterable[torch.Tensor]:
        nonlocal skipped
        for u in chosen:
            try:
                x = read_audio(u.audio, start=u.start, end=u.end, target_sr=sample_rate, utt_id=u.utt_id)
            except DataError:
                skipped += 1
                continue
            f = compute_fbank(x, sample_rate=sample_rate, num_mel_bins=num_mel_bins)
            yield f if floor is None else torch.maximum(f, floor)

    mean, istd = compute_cmvn(feats())
    return mean, istd, skipped


def _cmvn_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p / CMVN_FILE if p.is_dir() or p.suffix != ".json" else p


def save_cmvn(
    path: str | os.PathLike[str], mean: torch.Tensor, istd: torch.Tensor, *, frame_num: int = 0,
    floor: torch.Tensor | None = None,
) -> Path:
    """Write ``cmvn.json`` atomically (``path`` is the file, or a dir to hold ``cmvn.json``)."""
    out = _cmvn_path(path)
    data: dict[str, object] = {
        "mean": [float(v) for v in torch.as_tensor(mean).flatten()],
        "istd": [float(v) for v in torch.as_tensor(istd).flatten()],
        "frame_num": int(frame_num),
    }
    if floor is not None:
        data["floor"] = [float(v) for v in torch.as_tensor(floor).flatten()]
    atomic_write_text(out, json.dumps(data) + "\n")
    return out


def load_cmvn(path: str | os.PathLike[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``cmvn.json`` (file or dir holding it) -> (mean (F,), istd (F,)) float32 tensors."""
    p = _cmvn_path(path)
    try:
        data = json.loads(p.read_text())
        mean = torch.tensor(data["mean"], dtype=torch.float32)
        istd = torch.tensor(data["istd"], dtype=torch.float32)
    except FileNotFoundError as e:
        raise UserError(f"CMVN file not found: {p}") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"CMVN file {p} is malformed ({type(e).__name__}: {e})") from e
    if mean.ndim != 1 or mean.shape != istd.shape or not all(math.isfinite(float(v)) for v in istd):
        raise UserError(f"CMVN file {p}: 'mean' and 'istd' must be equal-length finite lists")
    return mean, istd


def load_floor(path: str | os.PathLike[str]) -> torch.Tensor | None:
    """The (F,) input floor stored in ``cmvn.json`` (file or dir), or None when it has none."""
    p = _cmvn_path(path)
    try:
        data = json.loads(p.read_text())
        floor = data.get("floor")
        return None if floor is None else torch.tensor(floor, dtype=torch.float32)
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"CMVN file {p} is malformed ({type(e).__name__}: {e})") from e
