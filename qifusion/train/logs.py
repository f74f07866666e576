"""Training logs: ``EXP/train.log`` (text), TensorBoard events, and ``EXP/train_log.jsonl``.

``train_log.jsonl`` has one JSON object per line: ``{"kind": "train", "epoch", "step", "loss", "lr",
"audio_per_s", "rss_mb", ...}`` (plus the model's loss parts ``loss_ctc``, ``loss_att``, ``loss_aid``,
``aid_acc``, averaged over the interval) every ``log_interval`` steps and ``{"kind": "epoch", "epoch",
"step", "dev_loss", "dev_cer", "dev_aid_acc", ...}`` after each epoch; :mod:`qifusion.train.plot` draws
it. Only rank 0 writes; other ranks get a logger that only prints warnings.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

LOG = logging.getLogger("qifusion.train")


def setup_text_logging(exp_dir: Path | None, *, rank: int) -> None:
    """Log INFO to stderr and (rank 0) ``EXP/train.log``; other ranks print warnings only."""
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    for h in list(LOG.handlers):
        LOG.removeHandler(h)
        h.close()
    fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    LOG.addHandler(console)
    if exp_dir is not None and rank == 0:
        exp_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(exp_dir / "train.log")
        fh.setFormatter(fmt)
        LOG.addHandler(fh)


def resident_mb(statm: Path = Path("/proc/self/statm")) -> float | None:
    """This process's resident memory in MiB (``/proc/self/statm``: pages x page size), or None where the
    system has no such file. The training log records it so that a heap that grows over hours shows
    (docs/train.md "Heap allocator")."""
    try:
        pages = int(statm.read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class MetricsLog:
    """Writes metric records to ``train_log.jsonl`` and TensorBoard (rank 0 only; else a no-op)."""

    def __init__(self, exp_dir: Path, *, enabled: bool, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = exp_dir / "train_log.jsonl"
        self._tb: Any = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(exp_dir / "tensorboard"))
            except ImportError:  # pragma: no cover - tensorboard is a dependency
                LOG.warning("tensorboard is not installed; no event files are written")

    def truncate_after(self, step: int) -> None:
        """On resume: drop records written after the checkpoint (``step`` > the resumed step)."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if int(rec.get("step", 0)) <= step:
                kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record; numeric fields also go to TensorBoard as ``KIND/NAME`` at its step."""
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            kind, step = record.get("kind", "train"), int(record.get("step", 0))
            for k, v in record.items():
                if k not in ("kind", "step", "epoch") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """Records of a ``train_log.jsonl`` (bad lines skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
