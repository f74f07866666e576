"""Learning-rate schedules, stepped once per optimizer step.

- ``warmuplr``: WeNet's WarmupLR (the Noam schedule without the model-size factor): linear warm-up to
  ``lr`` over ``warmup_steps``, then inverse-square-root decay,
  ``lr * warmup**0.5 * min(step**-0.5, step * warmup**-1.5)``.
- ``cosine``: linear warm-up, then a half cosine from ``lr`` to ``min_lr_ratio * lr`` at ``total_steps``.

Either can end in a cool-down (``train.cooldown``): once set, the lr is multiplied by ``1 - sqrt(p)``, ``p``
going from 0 to 1 over ``cooldown_steps``, so it reaches 0 at the end of the budget (the "1-sqrt"
cool-down of warm-up-stable-decay schedules; Hägele et al. 2024, arXiv 2405.18392). A step budget sets it
when the scheduler is built; a time budget (``train.max_minutes``) sets it when the trainer reaches the
last ``cooldown`` fraction of the minutes (``Trainer``).
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler

from qifusion.config import ConfigError


class Schedule(LRScheduler):
    """Base of the schedules: ``factor(step)`` times the cool-down ramp (1 until one is set)."""

    cooldown_start: int = -1  # class defaults: a scheduler state saved before the cool-down existed loads
    cooldown_steps: int = 0

    def factor(self, step: int) -> float:
        """Multiplier of the base lr after ``step`` optimizer steps (``step`` >= 0), before the ramp."""
        raise NotImplementedError

    def set_cooldown(self, *, start: int, steps: int) -> None:
        """Decay the lr from optimizer step ``start`` to 0 at step ``start + steps``."""
        self.cooldown_start, self.cooldown_steps = int(start), max(1, int(steps))

    def cooling(self) -> bool:
        """Whether a cool-down has been set."""
        return self.cooldown_start >= 0

    def cooldown_done(self, step: int) -> bool:
        """Whether the cool-down has brought the lr to 0 after ``step`` optimizer steps."""
        return self.cooling() and step >= self.cooldown_start + self.cooldown_steps

    def ramp(self, step: int) -> float:
        if not self.cooling() or step <= self.cooldown_start:
            return 1.0
        return 1.0 - math.sqrt(min(1.0, (step - self.cooldown_start) / self.cooldown_steps))

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch) * self.ramp(self.last_epoch)
        return [base * f for base in self.base_lrs]


class WarmupLR(Schedule):
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


class WarmupCosineLR(Schedule):
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


def build_scheduler(
    optimizer: torch.optim.Optimizer, *, name: str, warmup_steps: int, total_steps: int,
    cooldown: float = 0.0, time_budget: bool = False,
) -> Schedule:
    """Scheduler named by ``train.scheduler``; ``total_steps`` is the step budget (the cosine's end).

    ``cooldown`` > 0 ends the schedule in a cool-down over that fraction of ``total_steps``, set here
    unless ``time_budget`` (then the trainer sets it from the minutes; see the module docstring).
    """
    sched: Schedule
    if name == "warmuplr":
        sched = WarmupLR(optimizer, warmup_steps=warmup_steps)
    elif name == "cosine":
        sched = WarmupCosineLR(optimizer, warmup_steps=warmup_steps, total_steps=total_steps)
    else:
        raise ConfigError(f"config key 'train.scheduler' must be warmuplr or cosine, got {name!r}")
    if cooldown > 0 and not time_budget:
        steps = max(1, round(cooldown * total_steps))
        sched.set_cooldown(start=total_steps - steps, steps=steps)
    return sched
