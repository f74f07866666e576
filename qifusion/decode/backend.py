"""Load a model for decoding with the torch or the ONNX backend: both give a
:class:`~qifusion.models.protocol.DecodingModel` (this is the one place that picks a backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qifusion.decode.options import DEFAULT_CHUNK
from qifusion.errors import UserError

BACKENDS = ("torch", "onnx")


def load_for_decoding(path: str | Path, *, backend: str = "torch", device: str = "cpu") -> Any:
    """A loaded model dir with ``model`` (a :class:`~qifusion.models.protocol.DecodingModel`),
    ``config``, ``tokenizer``, ``accents`` and ``card``.

    ``backend="torch"``: :func:`qifusion.modeldir.load_model_dir` (model in eval mode on ``device``).
    ``backend="onnx"``: an export dir (or a model dir with its export in ``onnx/``) run by onnxruntime on
    the CPU.
    """
    if backend == "torch":
        from qifusion.modeldir import load_model_dir

        return load_model_dir(Path(path), device=device)
    if backend == "onnx":
        try:
            from qifusion.export.onnx_backend import load_onnx_model
        except ImportError as e:
            raise UserError(f"backend 'onnx' needs onnxruntime: pip install 'qifusion[onnx]' ({e})") from e
        return load_onnx_model(Path(path))
    raise UserError(f"unknown backend '{backend}' (choose {' or '.join(BACKENDS)})")


def default_chunk_size(path: str | Path, backend: str) -> int:
    """The streaming chunk size when none is given: the export's for ONNX, else ``DEFAULT_CHUNK``."""
    if backend == "onnx":
        try:
            from qifusion.export.onnx_backend import exported_chunk_size

            return exported_chunk_size(Path(path))
        except (ImportError, UserError):
            pass  # loading the backend reports what is wrong
    return DEFAULT_CHUNK
