"""Distributed set-up: ``torchrun`` environment detection, process groups and small collectives.

One process per device. Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the process group is
NCCL on CUDA and gloo on CPU. On a single host gloo is pinned to loopback (``MASTER_ADDR=127.0.0.1``,
``GLOO_SOCKET_IFNAME=lo`` unless set) so it needs no network set-up. On CPU each rank gets
``cores // local_world_size`` threads (1 each on a 2-core machine). Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from qifusion.errors import UserError

log = logging.getLogger("qifusion.train")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise UserError(f"environment variable {name}={raw!r} is not an integer") from e


def cpu_cores() -> int:
    """CPU cores this process may run on (respects affinity masks / cgroups' cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def setup_distributed(*, device: str) -> DistInfo:
    """Read the ``torchrun`` environment, pick the device, and start the process group if needed.

    ``device`` is ``"cpu"`` or ``"cuda"``; with CUDA each rank uses ``cuda:LOCAL_RANK``.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world_size = _env_int("LOCAL_WORLD_SIZE", world_size)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda was given but CUDA is not available in this torch build/machine")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise UserError(f"unknown device {device!r} (use cpu or cuda)")
    info = DistInfo(rank, local_rank, world_size, local_world_size, dev)
    if world_size > 1 and dev.type == "cpu":
        torch.set_num_threads(max(1, cpu_cores() // max(1, local_world_size)))
    if world_size > 1 and not dist.is_initialized():
        single_host = local_world_size == world_size
        if single_host:
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29500")
            if dev.type == "cpu":
                os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        log.info("process group %s: rank %d of %d (local %d of %d) on %s, %d threads", backend, rank,
                 world_size, local_rank, local_world_size, dev, torch.get_num_threads())
    return info


def cleanup_distributed() -> None:
    """Destroy the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.local_rank])
        else:
            dist.barrier()


def all_reduce(info: DistInfo, values: list[float], *, op: str = "sum") -> list[float]:
    """Reduce a few numbers over all ranks (``op``: sum, max or min); identity in one process."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    red = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
    dist.all_reduce(t, op=red)
    return t.tolist()


def average_gradients(info: DistInfo, params: list[torch.nn.Parameter]) -> None:
    """All-reduce (mean) gradients by hand, for an accumulation cycle whose synced backward was skipped."""
    if not info.distributed:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(info.world_size)
