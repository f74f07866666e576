"""``--init CKPT_OR_MODEL_DIR``: start training from an existing model's weights.

Weights whose name and shape match are loaded. When the unit list or accent list changed, rows of the
output heads (CTC / decoder vocabulary rows, AID accent rows) are copied by unit / accent name, so the
units and accents the two models share keep what they learned; rows of new units/accents and any other
tensor whose shape differs keep their fresh initialisation. Everything is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from qifusion.errors import UserError
from qifusion.modeldir import load_state_dict_file, read_accents


@dataclass
class InitSource:
    """What ``--init`` points at: weights plus (when found beside them) units and accents."""

    path: Path
    state: dict[str, torch.Tensor]
    tokenizer: Any | None
    accents: list[str] | None


@dataclass
class InitReport:
    loaded: list[str] = field(default_factory=list)
    remapped: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.remapped:
            parts.append(f"rows remapped by name in {', '.join(self.remapped)}")
        if self.reinitialised:
            parts.append(f"re-initialised (shape mismatch or absent): {', '.join(self.reinitialised)}")
        if self.unused:
            parts.append(f"unused from init: {', '.join(self.unused)}")
        return "; ".join(parts)


def read_init_source(path: Path) -> InitSource:
    """A model dir (``model.pt``) or a training checkpoint (``EXP/step_N.pt``; units from ``EXP``)."""
    from qifusion.data.tokenizer import Tokenizer

    path = Path(path)
    if path.is_dir():
        weights, aux = path / "model.pt", path
    elif path.is_file():
        weights, aux = path, path.parent
    else:
        raise UserError(f"--init {path}: no such checkpoint or model dir")
    state = load_state_dict_file(weights)
    tokenizer = Tokenizer.load(aux) if (aux / "units.txt").is_file() else None
    accents = read_accents(aux / "accents.txt") if (aux / "accents.txt").is_file() else None
    return InitSource(path=path, state=state, tokenizer=tokenizer, accents=accents)


def extend_tokenizer(base: Any, texts: list[str]) -> Any:
    """``base``'s units, plus (char units only) any new characters of ``texts`` before ``<sos/eos>``."""
    from qifusion.data.tokenizer import Tokenizer

    if base.token_type != "char":
        return base
    new = Tokenizer.build(texts, token_type="char")
    extra = [u for u in new.units if u not in set(base.units)]
    if not extra:
        return base
    return Tokenizer([*base.units[:-1], *extra, base.units[-1]], token_type="char")


def _row_map(old: list[str], new: list[str]) -> list[tuple[int, int]]:
    where = {name: i for i, name in enumerate(old)}
    return [(j, where[name]) for j, name in enumerate(new) if name in where]


def load_matching(
    model: torch.nn.Module,
    src: InitSource,
    *,
    units: list[str] | None = None,
    accents: list[str] | None = None,
) -> InitReport:
    """Copy matching weights of ``src`` into ``model`` in place (see the module doc); returns a report."""
    target = model.state_dict()
    rep = InitReport()
    old_units = src.tokenizer.units if src.tokenizer is not None else None
    vocab_remap = units is not None and old_units is not None and old_units != units
    accent_remap = accents is not None and src.accents is not None and src.accents != accents
    new_state = {}
    for key, tgt in target.items():
        if key not in src.state:
            rep.reinitialised.append(key)
            continue
        s = src.state[key].to(tgt.dtype)
        pairs = None
        if vocab_remap and s.ndim >= 1 and s.shape[0] == len(old_units) and tgt.shape[0] == len(units) \
                and len(old_units) != len(units) and s.shape[1:] == tgt.shape[1:]:
            pairs = _row_map(old_units, units)
        elif accent_remap and ("aid" in key or "accent" in key) and s.ndim >= 1 \
                and s.shape[0] == len(src.accents) and tgt.shape[0] == len(accents) \
                and s.shape[1:] == tgt.shape[1:]:
            pairs = _row_map(src.accents, accents)
        if pairs is not None:
            t = tgt.clone()
            for j, i in pairs:
                t[j] = s[i]
            new_state[key] = t
            rep.remapped.append(key)
        elif s.shape == tgt.shape:
            new_state[key] = s
            rep.loaded.append(key)
        else:
            rep.reinitialised.append(key)
    rep.unused = [k for k in src.state if k not in target]
    model.load_state_dict({**target, **new_state})
    return rep
