"""Loss curves from ``EXP/train_log.jsonl``: ``python -m qifusion.train.plot EXP [OUT.png]``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from qifusion.errors import UserError
from qifusion.train.logs import read_train_log


def loss_figure(recs: list[dict[str, Any]]) -> Any:
    """Three titled panels (a matplotlib Figure) from ``train_log.jsonl`` records.

    1. "ASR losses": train loss and its CTC / attention parts per log interval, dev loss per epoch;
    2. "accent-ID loss": the AID part on its own axis (it is ~1-2 while the others are ~10-200);
    3. "dev CER and accent-ID accuracy" in %.
    """
    from matplotlib.figure import Figure

    train = [r for r in recs if r.get("kind") == "train" and "loss" in r]
    epochs = [r for r in recs if r.get("kind") == "epoch" and r.get("dev_loss") is not None]
    fig = Figure(figsize=(15, 4))
    ax1, ax_aid, ax2 = fig.subplots(1, 3)
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    for part in ("loss_ctc", "loss_att"):  # logged parts (older logs have none)
        rows = [r for r in train if part in r]
        if rows:
            ax1.plot([r["step"] for r in rows], [r[part] for r in rows], "--", label=f"train {part[5:]}")
    ax1.plot([r["step"] for r in epochs], [r["dev_loss"] for r in epochs], "o-", label="dev loss")
    ax1.set(title="ASR losses", xlabel="step", ylabel="loss (per utterance)")
    ax1.legend(fontsize=8)
    aid_loss = [r for r in train if "loss_aid" in r]
    if aid_loss:
        ax_aid.plot([r["step"] for r in aid_loss], [r["loss_aid"] for r in aid_loss], color="tab:purple",
                    label="train AID loss")
        ax_aid.legend(fontsize=8)
    else:
        ax_aid.text(0.5, 0.5, "no accent-ID loss logged", ha="center", va="center",
                    transform=ax_aid.transAxes)
    ax_aid.set(title="accent-ID loss", xlabel="step", ylabel="cross-entropy")
    cer = [r for r in epochs if r.get("dev_cer") is not None]
    ax2.plot([r["step"] for r in cer], [r["dev_cer"] for r in cer], "o-", label="dev CER %")
    aid = [r for r in epochs if r.get("dev_aid_acc") is not None]
    if aid:
        ax2.plot([r["step"] for r in aid], [100 * r["dev_aid_acc"] for r in aid], "s-", label="dev AID acc %")
    train_aid = [r for r in train if "aid_acc" in r]
    if train_aid:
        ax2.plot([r["step"] for r in train_aid], [100 * r["aid_acc"] for r in train_aid], ":",
                 label="train AID acc %")
    ax2.set(title="dev CER and accent-ID accuracy", xlabel="step", ylabel="%")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_loss_curves(exp_dir: Path, out_png: Path | None = None) -> Path:
    """Draw :func:`loss_figure` of ``EXP/train_log.jsonl`` to ``EXP/loss.png`` (or ``out_png``)."""
    log_path = Path(exp_dir) / "train_log.jsonl"
    if not log_path.exists():
        raise UserError(f"{log_path} does not exist (has training run in {exp_dir}?)")
    fig = loss_figure(read_train_log(log_path))
    out = Path(out_png) if out_png else Path(exp_dir) / "loss.png"
    fig.savefig(out, dpi=100)
    return out


if __name__ == "__main__":  # pragma: no cover - thin wrapper
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m qifusion.train.plot EXP [OUT.png]")
    print(plot_loss_curves(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else None))
