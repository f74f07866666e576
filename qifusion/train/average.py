"""``qifusion average``: average the weights of several checkpoints into a model dir.

``by="dev_loss"``: the ``num`` epoch checkpoints with the lowest dev loss (as WeNet's average_model);
``by="last"``: the ``num`` newest checkpoints, step or epoch ones (one per training step).
Floating tensors are averaged in float64; integer buffers are taken from the newest checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from qifusion.errors import UserError
from qifusion.modeldir import load_config_file, read_accents, save_model_dir
from qifusion.train.checkpoint import load_checkpoint, read_index
from qifusion.train.logs import LOG


def select_checkpoints(exp_dir: Path, *, num: int, by: str) -> list[dict[str, Any]]:
    """Index entries of the checkpoints to average (newest last)."""
    entries = read_index(exp_dir)
    epochs = [e for e in entries if e["file"].startswith("epoch_")]
    if by == "dev_loss":
        scored = [e for e in epochs if e.get("dev_loss") is not None]
        if not scored:
            raise UserError(f"{exp_dir}: no epoch checkpoint with a dev loss (no dev split?); use --by last")
        chosen = sorted(scored, key=lambda e: e["dev_loss"])[:num]
    elif by == "last":
        by_step: dict[int, dict[str, Any]] = {}  # a step and an epoch file of the same step are one model
        for e in sorted(entries, key=lambda e: (e.get("step", -1), e["file"].startswith("epoch_"))):
            by_step[e.get("step", -1)] = e
        chosen = [by_step[k] for k in sorted(by_step)][-num:]
    else:
        raise UserError(f"--by must be dev_loss or last, got {by!r}")
    if not chosen:
        raise UserError(f"{exp_dir}: no checkpoints (*.pt) to average")
    if len(chosen) < num:
        LOG.warning("only %d checkpoint(s) available; averaging those", len(chosen))
    return sorted(chosen, key=lambda e: (e.get("step", -1), e.get("order", 0)))


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating tensors (float64 sum); other tensors from the last state."""
    out = {}
    for k, last in states[-1].items():
        if last.is_floating_point():
            acc = torch.zeros_like(last, dtype=torch.float64)
            for s in states:
                acc += s[k].double()
            out[k] = (acc / len(states)).to(last.dtype)
        else:
            out[k] = last.clone()
    return out


def average_of(exp_dir: Path, chosen: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The averaged model state of the checkpoints ``chosen`` (index entries of ``exp_dir``)."""
    return average_state_dicts([load_checkpoint(Path(exp_dir) / e["file"])["model"] for e in chosen])


def average_checkpoints(
    *, exp_dir: Path, num: int, by: str = "dev_loss", out_dir: Path | None = None, fp16: bool = False,
    files: list[str] | None = None,
) -> Path:
    """Average ``num`` checkpoints of ``exp_dir`` into a model dir (default ``EXP/avg_NUM``).

    ``fp16`` stores the weights as float16 (half the size; loading casts them back to float32).
    ``files`` names the checkpoints (e.g. ``["step_500.pt", ...]``) instead of choosing them ``by``.
    """
    from qifusion.data.tokenizer import Tokenizer
    from qifusion.models.model import QifusionModel

    exp_dir = Path(exp_dir)
    if num < 1:
        raise UserError(f"--num must be >= 1, got {num}")
    if not exp_dir.is_dir():
        raise UserError(f"experiment dir {exp_dir} does not exist")
    if files is None:
        chosen = select_checkpoints(exp_dir, num=num, by=by)
    else:
        index = {e["file"]: e for e in read_index(exp_dir)}
        missing = [f for f in files if f not in index or not (exp_dir / f).is_file()]
        if missing:
            raise UserError(f"{exp_dir}: checkpoint(s) {', '.join(missing)} not found")
        chosen, by = [index[f] for f in files], "files"
    cfg = load_config_file(exp_dir / "config.yaml")
    tokenizer = Tokenizer.load(exp_dir)
    accents = read_accents(exp_dir / "accents.txt")
    model = QifusionModel(cfg.model, vocab_size=tokenizer.vocab_size, num_accents=len(accents))
    try:
        model.load_state_dict(average_of(exp_dir, chosen))
    except RuntimeError as e:
        raise UserError(f"checkpoints in {exp_dir} do not match its config.yaml/units/accents: {e}") from e
    card: dict[str, Any] = {}
    final_card = exp_dir / "final" / "card.json"
    if final_card.exists():
        kept = ("data", "train_utts", "train_hours", "data_licences")
        card = {k: v for k, v in json.loads(final_card.read_text()).items() if k in kept}
    card.update({"averaged": [e["file"] for e in chosen], "by": by,
                 "dev": [{k: v for k, v in e.items() if k.startswith("dev_")} for e in chosen],
                 "steps": max(e.get("step", 0) for e in chosen)})
    out = Path(out_dir) if out_dir else exp_dir / f"avg_{num}"
    save_model_dir(out, model=model, config=cfg, tokenizer=tokenizer, accents=accents, card=card, fp16=fp16)
    LOG.info("averaged %s (by %s) into %s", ", ".join(card["averaged"]), by, out)
    print(out)
    return out
