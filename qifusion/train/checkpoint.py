"""Training checkpoints: ``EXP/step_N.pt`` every N steps, ``EXP/epoch_N.pt`` after each epoch.

Each file holds everything needed to continue bit-exactly on CPU: model, optimizer, scheduler and
grad-scaler states, the RNG states (python, numpy, torch, cuda), the loader position and the trainer's
counters, plus the dev metrics known so far. Files are written atomically (a ``.step_N.pt.XXXX.tmp``
temp file, then a rename), so ``*.pt`` never matches a partial file. ``EXP/checkpoints.json`` indexes
them (file, epoch, step, dev metrics) for ``--resume`` and ``qifusion average``.

Everything is stored as tensors, numbers, strings and containers, so files load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qifusion.errors import UserError
from qifusion.fileio import atomic_write, atomic_write_text, torch_load

INDEX = "checkpoints.json"
_NAME = re.compile(r"^(step|epoch)_(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """The states of python's, numpy's, torch's and (if present) CUDA's global generators."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any], *, index_entry: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically, then record ``index_entry`` in ``EXP/checkpoints.json``."""
    atomic_write(path, lambda f: torch.save(state, f), binary=True)
    entries = [e for e in read_index(path.parent) if e.get("file") != path.name]
    entries.append({"file": path.name, **index_entry})
    atomic_write_text(path.parent / INDEX, json.dumps(entries, indent=1) + "\n")


def prune_checkpoints(exp_dir: Path, *, keep: int) -> None:
    """Keep only the newest ``keep`` step checkpoints and ``keep`` epoch checkpoints (0 = keep all)."""
    if keep <= 0:
        return
    entries = read_index(exp_dir)
    removed = set()
    for kind in ("step", "epoch"):
        mine = [e for e in entries if e["file"].startswith(kind + "_")]
        mine.sort(key=lambda e: (e.get("step", 0), e.get("epoch", 0)))
        for e in mine[:-keep]:
            (exp_dir / e["file"]).unlink(missing_ok=True)
            removed.add(e["file"])
    if removed:
        kept = [e for e in entries if e["file"] not in removed]
        atomic_write_text(exp_dir / INDEX, json.dumps(kept, indent=1) + "\n")


def read_index(exp_dir: Path) -> list[dict[str, Any]]:
    """Index entries whose files still exist; rebuilt from file names (by mtime) if the index is bad."""
    path = Path(exp_dir) / INDEX
    entries: list[dict[str, Any]] = []
    if path.exists():
        try:
            entries = json.loads(path.read_text())
            if not isinstance(entries, list):
                entries = []
        except (OSError, json.JSONDecodeError):
            entries = []
    entries = [e for e in entries if isinstance(e, dict) and (Path(exp_dir) / str(e.get("file"))).exists()]
    known = {e["file"] for e in entries}
    order = len(entries)
    for f in sorted(Path(exp_dir).glob("*.pt"), key=lambda p: p.stat().st_mtime):
        m = _NAME.match(f.name)
        if m and f.name not in known:  # e.g. a run killed between writing the file and the index
            order += 1
            entries.append({"file": f.name, "kind": m.group(1), "order": order, **_counters(f, m)})
    return entries


def _counters(path: Path, name: re.Match[str]) -> dict[str, int]:
    """Epoch and step of a checkpoint missing from the index: a step file's step is in its name; an epoch
    file is read for its trainer counters (empty if unreadable, so it sorts before indexed files)."""
    if name.group(1) == "step":
        return {"step": int(name.group(2))}
    try:
        state = torch_load(path)
    except UserError:  # a corrupt file is reported when it is loaded, not here
        return {}
    trainer = state.get("trainer") if isinstance(state, dict) else None
    if not isinstance(trainer, dict) or not {"epoch", "step"} <= trainer.keys():
        return {}
    return {"epoch": int(trainer["epoch"]), "step": int(trainer["step"])}


def latest_checkpoint(exp_dir: Path) -> Path | None:
    """The newest checkpoint in ``exp_dir`` (highest step, an epoch file winning a tie), or None."""
    entries = read_index(exp_dir)
    if not entries:
        return None

    def key(e: dict[str, Any]) -> tuple[int, int, int]:
        return (int(e.get("step", -1)), int(e["file"].startswith("epoch_")), int(e.get("order", 0)))

    return Path(exp_dir) / max(entries, key=key)["file"]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint (CPU tensors); a missing or corrupt file is a UserError naming it."""
    state = torch_load(path, label="checkpoint ")
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path} does not hold a qifusion training checkpoint (no 'model')")
    return state
