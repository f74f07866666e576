"""A standalone utterance accent classifier for :mod:`benchmarks.corpus_check`: an x-vector-style TDNN.

Input: the project's 80-dim fbank (:func:`qifusion.data.features.compute_fbank`) with per-utterance mean
normalisation (CMN); inside the model every input (a training crop or a whole test utterance) is
normalised to zero mean and unit variance per mel bin over time (``AidConfig.var_norm``), so level and
channel carry no label. Network (Snyder et al. 2018, smaller): five 1-D convolutions over time
(frame-level TDNN, contexts 5/3x2/3x3/1/1), then mean + standard-deviation pooling, plain or attentive
(Okabe et al. 2018, as in ECAPA-TDNN: per-channel softmax weights over time), two fully connected
layers, softmax over accents.

Training (speaker-invariance is the point: test speakers are new voices): random 2 s crops, random
vocal-tract-length warps of the fbank's frequency axis (factor in [1 / warp, warp], interpolated between
mel bins), random tempo (frames resampled by a factor in [1 / tempo, tempo]), SpecAugment masks
(:func:`qifusion.data.augment.spec_augment`), Adam with a one-cycle learning rate. Model selection reads
**dev only**: after every epoch (and for the average of the last ``average_last`` epochs' weights) the
accuracy on the dev utterances named by ``dev_focus`` (the corpus check passes dev speakers whose source
voice is unseen in train, like the headline's test speakers) decides, overall dev accuracy breaks ties.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qifusion.config import SpecAugConfig
from qifusion.data.audio import read_audio
from qifusion.data.augment import spec_augment, vtlp_warp
from qifusion.data.features import compute_fbank
from qifusion.train.average import average_state_dicts

CROP_FRAMES = 200  # 2 s training crops
SPEC_AUG = SpecAugConfig(num_freq_masks=1, max_freq_width=12, num_time_masks=1, max_time_width=30)


@dataclass(frozen=True)
class AidConfig:
    """Classifier and training settings. Defaults: the best of the settings compared on the accents
    corpus's dev (accuracy on its unseen-source dev speakers; the comparison: issue 16's closing note)."""

    epochs: int = 8
    batch_size: int = 64
    max_lr: float = 2e-3
    warp: float = 1.25  # vocal-tract-length warp factors in [1 / warp, warp]
    tempo: float = 1.15  # tempo factors in [1 / tempo, tempo]
    var_norm: bool = True  # per-input mean + variance normalisation inside the model
    pooling: str = "attentive"  # "stats" (mean + std) or "attentive"
    average_last: int = 3  # also try the average of the last N epochs' weights (0: off)
    cepstra: int = 0  # keep the first N cepstral coefficients of each frame (0: all): drops pitch harmonics
    crop_frames: int = CROP_FRAMES  # training crop length in input frames (50 = 2 s of 4x sub-sampled frames)

    def __post_init__(self) -> None:
        if self.pooling not in ("stats", "attentive"):
            raise ValueError(f"AidConfig.pooling must be 'stats' or 'attentive', got {self.pooling!r}")
        if not 0 <= self.cepstra <= 80:
            raise ValueError(f"AidConfig.cepstra must be in 0..80, got {self.cepstra}")
        if self.crop_frames < 8:
            raise ValueError(f"AidConfig.crop_frames must be >= 8, got {self.crop_frames}")
        if self.warp < 1.0 or self.tempo < 1.0:
            raise ValueError(f"AidConfig.warp and .tempo must be >= 1, got {self.warp}, {self.tempo}")


@dataclass
class TrainResult:
    """The trained model, what was kept (an epoch number or ``"avg"``) with its (dev focus, dev) accuracy,
    and dev accuracies per epoch."""

    model: nn.Module
    kept: int | str
    kept_dev: tuple[float, float] = (-1.0, -1.0)
    dev_acc: list[float] = field(default_factory=list)
    dev_focus_acc: list[float] = field(default_factory=list)
    avg_dev_acc: float | None = None
    avg_dev_focus_acc: float | None = None
    steps: int = 0
    minutes: float = 0.0


def cepstral_smoother(dim: int, keep: int) -> torch.Tensor:
    """(dim, dim) matrix S: ``frames @ S`` keeps the first ``keep`` coefficients of the orthonormal DCT-II
    of each log-mel frame (its cepstrum, as MFCCs) and maps back to ``dim`` bins: a smoothed spectral
    envelope without the fine structure of the pitch harmonics."""
    n = np.arange(dim)
    dct = np.cos(np.pi / dim * (n[None, :] + 0.5) * n[:, None]) * np.sqrt(2.0 / dim)
    dct[0] /= np.sqrt(2.0)
    low = dct[:keep]  # (keep, dim), orthonormal rows
    return torch.from_numpy(low.T @ low).float()


def utterance_features(path: str) -> torch.Tensor:
    """(T, 80) float16 fbank of ``path`` with its per-utterance mean removed."""
    feats = compute_fbank(read_audio(path))
    return (feats - feats.mean(dim=0, keepdim=True)).to(torch.float16)


@torch.no_grad()
def encoder_features(model_dir: Path, paths: list[str], blocks: list[int]) -> dict[int, list[torch.Tensor]]:
    """Bottleneck features (as in x-vector language ID on ASR bottlenecks, Snyder et al. 2018): for each
    1-based encoder block in ``blocks``, the (T', D) float16 outputs of that block of the trained ASR model
    at ``model_dir`` (full context, one utterance at a time), per path. A recogniser's hidden layers are
    trained to keep phones and drop the voice, which is what an accent classifier on unseen voices needs."""
    from qifusion.modeldir import load_model_dir

    loaded = load_model_dir(model_dir)
    enc = loaded.model.encoder
    bad = [b for b in blocks if not 1 <= b <= enc.num_blocks]
    if bad:
        raise ValueError(f"encoder blocks {bad} are not in 1..{enc.num_blocks} ({model_dir})")
    out: dict[int, list[torch.Tensor]] = {b: [] for b in blocks}
    for path in paths:
        feats = compute_fbank(read_audio(path), num_mel_bins=enc.cfg.input_dim).unsqueeze(0)
        hidden = enc(feats, torch.tensor([feats.shape[1]]), chunk_size=-1).hidden
        for b in blocks:
            out[b].append(hidden[b - 1][0].to(torch.float16))
    return out


class AttentiveStats(nn.Module):
    """(B, C, T) -> (B, 2C): attention-weighted mean and std over time, weights per channel."""

    def __init__(self, channels: int, hidden: int = 128):
        super().__init__()
        self.att = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, channels, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(self.att(h), dim=2)
        mean = (w * h).sum(dim=2)
        var = (w * h * h).sum(dim=2) - mean * mean
        return torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=1)


class XVector(nn.Module):
    """TDNN + statistics pooling. ``forward``: (B, T, 80) -> (B, num_classes) logits."""

    def __init__(self, num_classes: int, *, channels: int = 256, embed: int = 128, feat_dim: int = 80,
                 pooling: str = "stats", var_norm: bool = False, cepstra: int = 0):
        super().__init__()
        self.var_norm = var_norm
        self.smoother = cepstral_smoother(feat_dim, cepstra) if 0 < cepstra < feat_dim else None
        layers: list[nn.Module] = []
        spec = ((feat_dim, channels, 5, 1), (channels, channels, 3, 2), (channels, channels, 3, 3),
                (channels, channels, 1, 1), (channels, 2 * channels, 1, 1))
        for cin, cout, k, d in spec:
            layers += [nn.Conv1d(cin, cout, k, dilation=d), nn.ReLU(), nn.BatchNorm1d(cout)]
        self.frames = nn.Sequential(*layers)
        self.pool = AttentiveStats(2 * channels) if pooling == "attentive" else None
        self.head = nn.Sequential(nn.Linear(4 * channels, embed), nn.ReLU(), nn.BatchNorm1d(embed),
                                  nn.Dropout(0.2), nn.Linear(embed, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smoother is not None:
            x = x @ self.smoother
        if self.var_norm:
            x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-5)
        h = self.frames(x.transpose(1, 2))  # (B, 2C, T')
        if self.pool is not None:
            return self.head(self.pool(h))
        return self.head(torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1))  # (B, 4C) -> logits


def crop(f: torch.Tensor, rng: random.Random, frames: int = CROP_FRAMES) -> torch.Tensor:
    """A random ``frames`` window of (T, D) ``f`` (padded by repetition when shorter)."""
    if f.shape[0] < frames:
        f = f.repeat((frames + f.shape[0] - 1) // f.shape[0], 1)
    start = rng.randrange(f.shape[0] - frames + 1)
    return f[start:start + frames]


def warp_fbank(f: torch.Tensor, alpha: float, tempo: float) -> torch.Tensor:
    """(T, D) fbank -> (round(T / tempo), D): the fbank of a speaker whose spectrum is scaled by ``alpha``
    (:func:`qifusion.data.augment.vtlp_warp`) and whose rate is ``tempo``."""
    out = vtlp_warp(f, alpha)
    frames = max(1, round(f.shape[0] / tempo))
    return nn.functional.interpolate(out.T.unsqueeze(0), size=frames, mode="linear").squeeze(0).T


def augment_batch(feats: list[torch.Tensor], cfg: AidConfig, rng: random.Random) -> torch.Tensor:
    """List of (T_i, D) features -> (B, cfg.crop_frames, D) float32 training batch: warp, tempo, crop,
    masks."""
    out = []
    for f in feats:
        x = warp_fbank(f.float(), rng.uniform(1 / cfg.warp, cfg.warp), rng.uniform(1 / cfg.tempo, cfg.tempo))
        masks = np.random.default_rng(rng.getrandbits(32))
        out.append(spec_augment(crop(x, rng, cfg.crop_frames), SPEC_AUG, masks))
    return torch.stack(out)


@torch.no_grad()
def predict(model: nn.Module, feats: list[torch.Tensor]) -> list[int]:
    """Class index per utterance (whole utterance, one at a time: no padding in the statistics)."""
    model.eval()
    return [int(model(f.float().unsqueeze(0)).argmax(dim=1)) for f in feats]


@torch.no_grad()
def log_posteriors(model: nn.Module, feats: list[torch.Tensor]) -> torch.Tensor:
    """(N, C) log-softmax class posteriors per utterance (whole utterances, one at a time, as
    :func:`predict`)."""
    model.eval()
    return torch.cat([torch.log_softmax(model(f.float().unsqueeze(0)), dim=1) for f in feats])


def accuracy(pred: list[int], labels: list[int]) -> float:
    """Share of ``pred`` equal to ``labels`` (0.0 for empty lists)."""
    return sum(p == y for p, y in zip(pred, labels)) / max(1, len(labels))


def _dev_scores(model: nn.Module, dev: list[torch.Tensor], dev_y: list[int],
                focus: list[int]) -> tuple[float, float]:
    pred = predict(model, dev)
    return accuracy(pred, dev_y), accuracy([pred[i] for i in focus], [dev_y[i] for i in focus])


def train_classifier(train: list[torch.Tensor], train_y: list[int], dev: list[torch.Tensor], dev_y: list[int],
                     *, num_classes: int, config: AidConfig | None = None, dev_focus: list[int] | None = None,
                     max_minutes: float = 25.0, seed: int = 0, log: bool = True) -> TrainResult:
    """Train :class:`XVector` for ``config.epochs`` (or until ``max_minutes``) on (T_i, 80) fbanks and
    keep the candidate (an epoch, or the average of the last epochs) with the best accuracy on the dev
    utterances ``dev_focus`` (all of dev when None), overall dev accuracy breaking ties. Classes are
    balanced per batch by sampling each example with weight 1 / its class count."""
    cfg = config or AidConfig()
    focus = list(range(len(dev))) if dev_focus is None else list(dev_focus)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = XVector(num_classes, pooling=cfg.pooling, var_norm=cfg.var_norm, cepstra=cfg.cepstra,
                    feat_dim=train[0].shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.max_lr / 2, weight_decay=1e-4)
    counts = np.bincount(train_y, minlength=num_classes)
    weights = [1.0 / counts[y] for y in train_y]
    steps_per_epoch = max(1, len(train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.max_lr,
                                                total_steps=cfg.epochs * steps_per_epoch)
    result = TrainResult(model=model, kept=0)
    best_key, best_state, recent, t0 = (-1.0, -1.0), None, [], time.time()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        for _ in range(steps_per_epoch):
            idx = rng.choices(range(len(train)), weights=weights, k=cfg.batch_size)
            x = augment_batch([train[i] for i in idx], cfg, rng)
            loss = nn.functional.cross_entropy(model(x), torch.tensor([train_y[i] for i in idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            result.steps += 1
        acc, focus_acc = _dev_scores(model, dev, dev_y, focus)
        result.dev_acc.append(round(acc, 4))
        result.dev_focus_acc.append(round(focus_acc, 4))
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        recent = [*recent, state][-cfg.average_last:] if cfg.average_last else []
        if (focus_acc, acc) >= best_key:
            best_key, best_state, result.kept = (focus_acc, acc), state, epoch
        minutes = (time.time() - t0) / 60
        if log:
            print(f"epoch {epoch}: loss {loss.item():.3f} dev acc {acc:.3f} focus {focus_acc:.3f} "
                  f"({minutes:.1f} min)", flush=True)
        if minutes > max_minutes:
            break
    if len(recent) > 1:
        model.load_state_dict(average_state_dicts(recent))
        acc, focus_acc = _dev_scores(model, dev, dev_y, focus)
        result.avg_dev_acc, result.avg_dev_focus_acc = round(acc, 4), round(focus_acc, 4)
        if log:
            print(f"average of the last {len(recent)} epochs: dev acc {acc:.3f} focus {focus_acc:.3f}",
                  flush=True)
        if (focus_acc, acc) >= best_key:
            best_key, best_state, result.kept = (focus_acc, acc), None, "avg"
    result.minutes = round((time.time() - t0) / 60, 2)
    result.kept_dev = best_key
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


FUSION_WEIGHTS = [round(0.1 * k, 1) for k in range(11)]


def fuse_weight(lp_fbank: torch.Tensor, lp_enc: torch.Tensor, labels: list[int],
                focus: list[int] | None) -> tuple[float, float, float]:
    """The weight w of ``w * lp_enc + (1 - w) * lp_fbank`` (log posteriors, (N, C)) in ``FUSION_WEIGHTS``
    with the best accuracy on ``focus`` (all when None), overall accuracy breaking ties, then the weight
    nearest 0.5; returns (w, accuracy on focus, accuracy)."""
    idx = list(range(len(labels))) if focus is None else focus
    best = None
    for w in sorted(FUSION_WEIGHTS, key=lambda w: abs(w - 0.5)):
        pred = (w * lp_enc + (1 - w) * lp_fbank).argmax(dim=1).tolist()
        key = (accuracy([pred[i] for i in idx], [labels[i] for i in idx]), accuracy(pred, labels))
        if best is None or key > best[1]:
            best = (w, key)
    assert best is not None
    return best[0], round(best[1][0], 4), round(best[1][1], 4)
