"""How torch's OpenMP threads wait between parallel regions: set before torch loads (torch-free module).

torch's CPU wheels for Linux use GNU OpenMP (libgomp), which reads its settings once, when torch is
imported. A thread that finishes its share of an operator waits for the next one in one of two ways:
it spins (busy-waits) for up to ``GOMP_SPINCOUNT`` iterations, then sleeps on a futex. The defaults
pull two ways on a small CPU machine (measured on 2 cores, ``benchmarks.speed.train_throughput``, the
``baseline_small`` training step; numbers in docs/train.md "Threads"):

- libgomp's own default spins long (300000 iterations): when another process keeps a core busy, a thread
  spins away the time slice that its partner needs, and training slows several-fold;
- ``OMP_WAIT_POLICY=PASSIVE`` never spins: every operator then wakes its partner thread from a futex
  sleep, thousands of times per step, and an idle machine takes 14-21% longer per training step.

A short spin (:data:`SPIN_COUNT`) after which the thread sleeps keeps the wake-ups away on an idle machine
and bounds the waste on a busy one. :func:`apply_defaults` sets it where the user set neither variable;
``qifusion``'s command line calls it first, before any torch import.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

SPIN_COUNT = 2000  # iterations of a spin-wait before a thread sleeps (docs/train.md "Threads")
VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def wait_settings(spin_count: int = SPIN_COUNT) -> dict[str, str]:
    """The variables :func:`apply_defaults` sets: passive waits after a short spin (``spin_count``
    iterations; 0: sleep at once, as ``OMP_WAIT_POLICY=PASSIVE`` alone)."""
    return {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": str(spin_count)}


def apply_defaults(env: MutableMapping[str, str]) -> dict[str, str]:
    """Set :func:`wait_settings` in ``env`` (e.g. ``os.environ``) unless the user set ``OMP_WAIT_POLICY``
    or ``GOMP_SPINCOUNT``; returns what was set (empty when the user's choice stands). Only takes effect
    in a process that has not imported torch yet, and in the processes it starts."""
    if any(k in env for k in VARIABLES):
        return {}
    new = wait_settings()
    env.update(new)
    return new


def describe(env: Mapping[str, str]) -> str:
    """The wait settings of ``env`` as one line, e.g. ``OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=2000``
    (``-`` for an unset variable): what ``train.log`` and the recipes' ``waits.json`` record."""
    return " ".join(f"{k}={env.get(k, '-')}" for k in VARIABLES)
