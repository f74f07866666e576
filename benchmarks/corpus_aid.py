"""A standalone utterance accent classifier for :mod:`benchmarks.corpus_check`: an x-vector-style TDNN.

Input: the project's 80-dim fbank (:func:`qifusion.data.features.compute_fbank`) with per-utterance mean
normalisation (CMN), so level and channel offsets carry no label. Network (Snyder et al. 2018, smaller):
five 1-D convolutions over time (frame-level TDNN, contexts 5/3x2/3x3/1/1), mean + standard-deviation
statistics pooling, two fully connected layers, softmax over accents. Training: random 2 s crops,
random spectral warps (the fbank's frequency axis scaled by a factor in [1 / WARP, WARP], interpolated
between mel bins: vocal-tract-length perturbation) and tempo changes (frames resampled by a factor in
[1 / WARP, WARP]), SpecAugment-style frequency and time masks, Adam; the epoch kept is the one with the
best **dev** accuracy (dev speakers are unseen in train, like test's); test is only scored at the end.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from qifusion.data.audio import read_audio
from qifusion.data.features import compute_fbank

CROP_FRAMES = 200  # 2 s training crops
WARP = 1.15  # augmentation range of the spectral warp and tempo factors
MEL_LOW, MEL_HIGH = 20.0, 7600.0  # the project's fbank range (qifusion.data.features)


@dataclass
class TrainResult:
    """The trained model, the epoch kept, and the dev accuracy after each epoch."""

    model: nn.Module
    best_epoch: int
    dev_acc: list[float] = field(default_factory=list)
    steps: int = 0
    minutes: float = 0.0


def utterance_features(path: str) -> torch.Tensor:
    """(T, 80) float16 fbank of ``path`` with its per-utterance mean removed."""
    feats = compute_fbank(read_audio(path))
    return (feats - feats.mean(dim=0, keepdim=True)).to(torch.float16)


class XVector(nn.Module):
    """TDNN + statistics pooling. ``forward``: (B, T, 80) -> (B, num_classes) logits."""

    def __init__(self, num_classes: int, *, channels: int = 256, embed: int = 128, feat_dim: int = 80):
        super().__init__()
        layers: list[nn.Module] = []
        spec = ((feat_dim, channels, 5, 1), (channels, channels, 3, 2), (channels, channels, 3, 3),
                (channels, channels, 1, 1), (channels, 2 * channels, 1, 1))
        for cin, cout, k, d in spec:
            layers += [nn.Conv1d(cin, cout, k, dilation=d), nn.ReLU(), nn.BatchNorm1d(cout)]
        self.frames = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(4 * channels, embed), nn.ReLU(), nn.BatchNorm1d(embed),
                                  nn.Dropout(0.2), nn.Linear(embed, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.frames(x.transpose(1, 2))  # (B, 2C, T')
        stats = torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1)  # (B, 4C)
        return self.head(stats)


def _crop(f: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """A random CROP_FRAMES window of (T, D) ``f`` (padded by repetition when shorter)."""
    if f.shape[0] < CROP_FRAMES:
        f = f.repeat((CROP_FRAMES + f.shape[0] - 1) // f.shape[0], 1)
    start = rng.randrange(f.shape[0] - CROP_FRAMES + 1)
    return f[start:start + CROP_FRAMES]


def _mel(f: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(f / 700.0)


def _warp(f: torch.Tensor, alpha: float, tempo: float) -> torch.Tensor:
    """(T, D) fbank of a speaker whose spectrum is scaled by ``alpha`` and rate by ``tempo``: bin i takes
    the (interpolated) value at frequency center_i / alpha; frames are resampled to T / tempo."""
    d = f.shape[1]
    lo, hi = _mel(np.array(MEL_LOW)), _mel(np.array(MEL_HIGH))
    step = (hi - lo) / (d + 1)
    centers_mel = lo + step * np.arange(1, d + 1)
    centers_hz = 700.0 * np.expm1(centers_mel / 1127.0)
    src = np.clip((_mel(centers_hz / alpha) - lo) / step - 1, 0, d - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, d - 1)
    w = torch.from_numpy(src - i0).float()
    out = f[:, i0] * (1 - w) + f[:, i1] * w
    frames = max(1, round(f.shape[0] / tempo))
    return nn.functional.interpolate(out.T.unsqueeze(0), size=frames, mode="linear").squeeze(0).T


def _spec_augment(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """(B, T, D): per example one frequency mask (<= 12 bins) and one time mask (<= 30 frames)."""
    x = x.clone()
    for b in range(x.shape[0]):
        w = rng.randint(0, 12)
        f0 = rng.randint(0, x.shape[2] - w)
        x[b, :, f0:f0 + w] = 0.0
        t = rng.randint(0, 30)
        t0 = rng.randint(0, x.shape[1] - t)
        x[b, t0:t0 + t, :] = 0.0
    return x


@torch.no_grad()
def predict(model: nn.Module, feats: list[torch.Tensor]) -> list[int]:
    """Class index per utterance (whole utterance, one at a time: no padding in the statistics)."""
    model.eval()
    return [int(model(f.float().unsqueeze(0)).argmax(dim=1)) for f in feats]


def accuracy(pred: list[int], labels: list[int]) -> float:
    """Share of ``pred`` equal to ``labels`` (0.0 for empty lists)."""
    return sum(p == y for p, y in zip(pred, labels)) / max(1, len(labels))


def train_classifier(train: list[torch.Tensor], train_y: list[int], dev: list[torch.Tensor], dev_y: list[int],
                     *, num_classes: int, epochs: int, max_minutes: float, seed: int, batch_size: int = 64,
                     log: bool = True) -> TrainResult:
    """Train :class:`XVector` for ``epochs`` (or until ``max_minutes``); keep the best-dev epoch.
    Classes are balanced per batch by sampling each example with weight 1 / its class count."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = XVector(num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    counts = np.bincount(train_y, minlength=num_classes)
    weights = [1.0 / counts[y] for y in train_y]
    steps_per_epoch = max(1, len(train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * steps_per_epoch)
    result = TrainResult(model=model, best_epoch=0)
    best_state, best_acc, t0 = None, -1.0, time.time()
    for epoch in range(1, epochs + 1):
        model.train()
        for _ in range(steps_per_epoch):
            idx = rng.choices(range(len(train)), weights=weights, k=batch_size)
            x = torch.stack([_crop(_warp(train[i].float(), rng.uniform(1 / WARP, WARP),
                                         rng.uniform(1 / WARP, WARP)), rng) for i in idx])
            y = torch.tensor([train_y[i] for i in idx])
            loss = nn.functional.cross_entropy(model(_spec_augment(x, rng)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            result.steps += 1
        acc = accuracy(predict(model, dev), dev_y)
        result.dev_acc.append(round(acc, 4))
        if acc > best_acc:
            best_acc, result.best_epoch = acc, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        minutes = (time.time() - t0) / 60
        if log:
            print(f"epoch {epoch}: loss {loss.item():.3f} dev acc {acc:.3f} ({minutes:.1f} min)", flush=True)
        if minutes > max_minutes:
            break
    result.minutes = round((time.time() - t0) / 60, 2)
    if best_state is not None:
        model.load_state_dict(best_state)
    return result
