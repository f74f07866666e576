"""Model dirs: the one layout that ``EXP/final``, checkpoint averages and ``models/*`` share.

::

    model.pt      state dict (float32, or float16 with ``fp16=True``; loaded with weights_only=True)
    config.yaml   the full resolved config (model / data / train)
    units.txt     unit list (+ bpe.model for BPE), written by Tokenizer.save
    accents.txt   accent names, one per line; line i is accent id i
    cmvn.json     global CMVN stats (also inside model.pt; kept for export and inspection)
    card.json     model card: data, epochs, steps, dev metrics, notes
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from qifusion.config import Config, ConfigError, from_dict, save_config
from qifusion.errors import UserError
from qifusion.fileio import atomic_write, atomic_write_text, torch_load

REQUIRED = ("model.pt", "config.yaml", "units.txt", "accents.txt", "card.json")


@dataclass
class LoadedModel:
    """A model dir in memory; ``model`` is a ``QifusionModel`` in eval mode on the requested device."""

    model: torch.nn.Module
    config: Config
    tokenizer: Any
    accents: list[str]
    card: dict[str, Any]


def model_cmvn(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
    """(mean (F,), istd (F,), input floor (F,) or None) of the model's global CMVN module, or None if it
    has none."""
    from qifusion.models.frontend import GlobalCMVN

    for m in model.modules():
        if isinstance(m, GlobalCMVN):
            floor = m.floor.detach().float().cpu()
            return m.mean.detach().float().cpu(), m.istd.detach().float().cpu(), (
                floor if bool(torch.isfinite(floor).all()) else None)
    return None


def write_accents(path: Path, accents: list[str]) -> None:
    """Write ``accents.txt`` (one name per line) atomically."""
    atomic_write_text(path, "".join(a + "\n" for a in accents))


def read_accents(path: Path) -> list[str]:
    """Read ``accents.txt``; a missing file is a UserError naming it."""
    try:
        return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError as e:
        raise UserError(f"accent list not found: {path}") from e


def save_model_dir(
    path: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    config: Config,
    tokenizer: Any,
    accents: list[str],
    card: dict[str, Any],
    fp16: bool = False,
) -> Path:
    """Write a model dir at ``path`` (every file atomically); returns the path."""
    from qifusion.data.cmvn import save_cmvn

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    raw = model.module if hasattr(model, "module") else model
    state = {
        k: (v.detach().half() if fp16 and v.is_floating_point() else v.detach()).cpu().clone()
        for k, v in raw.state_dict().items()
    }
    atomic_write(out / "model.pt", lambda f: torch.save(state, f), binary=True)
    save_config(config, out / "config.yaml")
    tokenizer.save(out)
    write_accents(out / "accents.txt", list(accents))
    cmvn = model_cmvn(raw)
    if cmvn is not None:
        save_cmvn(out, cmvn[0], cmvn[1], floor=cmvn[2])
    card = {**card, "num_params": sum(p.numel() for p in raw.parameters()), "fp16": fp16,
            "vocab_size": tokenizer.vocab_size, "accents": list(accents)}
    atomic_write_text(out / "card.json", json.dumps(card, indent=1, ensure_ascii=False) + "\n")
    return out


def load_model_dir(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model dir; a missing or corrupt file is a UserError naming it."""
    from qifusion.data.tokenizer import Tokenizer
    from qifusion.models.model import QifusionModel

    d = Path(path)
    if not d.is_dir():
        raise UserError(f"model dir {d} does not exist or is not a directory")
    for name in REQUIRED:
        if not (d / name).is_file():
            raise UserError(f"model dir {d} is incomplete: {name} is missing")
    config = load_config_file(d / "config.yaml")
    tokenizer = Tokenizer.load(d)
    accents = read_accents(d / "accents.txt")
    try:
        card = json.loads((d / "card.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{d / 'card.json'} is not valid JSON ({e})") from e
    state = load_state_dict_file(d / "model.pt")
    model = QifusionModel(config.model, vocab_size=tokenizer.vocab_size, num_accents=len(accents))
    ref = model.state_dict()
    state = {k: v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(
            f"{d / 'model.pt'} does not match {d / 'config.yaml'} / units.txt / accents.txt: {e}"
        ) from e
    model.to(device).eval()
    return LoadedModel(model=model, config=config, tokenizer=tokenizer, accents=accents, card=card)


def load_config_file(path: Path) -> Config:
    """A config.yaml as saved in a model dir or EXP (UserError naming the file on problems)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
        return from_dict(data, Config)
    except FileNotFoundError as e:
        raise UserError(f"config file not found: {path}") from e
    except (yaml.YAMLError, ConfigError, TypeError) as e:
        raise UserError(f"{path}: {e}") from e


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A bare state dict (``model.pt``) or the ``model`` entry of a training checkpoint, on CPU."""
    state = torch_load(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a model state dict")
    return state
