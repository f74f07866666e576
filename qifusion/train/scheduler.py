"""Learning-rate schedules, stepped once per optimizer step.

- ``warmuplr``: WeNet's WarmupLR (the Noam schedule without the model-size factor): linear warm-up to
  ``lr`` over ``warmup_steps``, then inverse-square-root decay,
  ``lr * warmup**0.5 * min(step**-0.5, step * warmup**-1.5)``.
- ``cosine``: linear warm-up, then a half cosine from ``lr`` to ``min_lr_ratio * lr`` at ``total_steps``.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler

from qifusion.config import ConfigError


class WarmupLR(LRScheduler):
    """Inverse-sqrt decay after a linear warm-up (idea from WeNet's ``WarmupLR``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, warmup_steps: int, last_epoch: int = -1) -> None:
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """Multiplier of the base lr after ``step`` optimizer steps (``step`` >= 0)."""
        s = step + 1
        if self.warmup_steps <= 0:
            return s**-0.5
        return self.warmup_steps**0.5 * min(s**-0.5, s * self.warmup_steps**-1.5)

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]


class WarmupCosineLR(LRScheduler):
    """Linear warm-up then cosine decay to ``min_lr_ratio * lr`` at ``total_steps`` (constant after)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        warmup_steps: int,
        total_steps: int,
        min_lr_ratio: float = 0.01,
        last_epoch: int = -1,
    ) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, warmup_steps + 1)
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        s = step + 1
        if s <= self.warmup_steps:
            return s / max(1, self.warmup_steps)
        progress = min(1.0, (s - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, name: str, warmup_steps: int, total_steps: int
) -> LRScheduler:
    """Scheduler named by ``train.scheduler``; ``total_steps`` is used by ``cosine`` only."""
    if name == "warmuplr":
        return WarmupLR(optimizer, warmup_steps=warmup_steps)
    if name == "cosine":
        return WarmupCosineLR(optimizer, warmup_steps=warmup_steps, total_steps=total_steps)
    raise ConfigError(f"config key 'train.scheduler' must be warmuplr or cosine, got {name!r}")
