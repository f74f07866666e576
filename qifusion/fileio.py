"""Atomic file writes: a file is either absent, the old version, or complete (never half-written)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike[str], writer: Callable[[IO[Any]], None], *, binary: bool) -> None:
    """Call ``writer(f)`` on a temp file beside ``path`` (name not ending like ``path``), then rename.

    The temp name is ``.NAME.XXXX.tmp`` so globbing ``*.pt`` never sees a partial checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; use the usual mode
        with os.fdopen(fd, "wb" if binary else "w") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data), binary=True)


def torch_load(path: str | os.PathLike[str], *, label: str = "") -> Any:
    """``torch.load`` on CPU with ``weights_only=True``; a missing or corrupt file is a UserError that
    names it (``label`` prefixes the path, e.g. ``"checkpoint "``)."""
    import torch

    from qifusion.errors import UserError

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise UserError(f"{label}{path} does not exist") from e
    except Exception as e:
        raise UserError(f"{label}{path} is unreadable or corrupt ({type(e).__name__}: {e})") from e
