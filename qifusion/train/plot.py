"""Loss curves from ``EXP/train_log.jsonl``: ``python -m qifusion.train.plot EXP [OUT.png]``."""

from __future__ import annotations

import sys
from pathlib import Path

from qifusion.errors import UserError
from qifusion.train.logs import read_train_log


def plot_loss_curves(exp_dir: Path, out_png: Path | None = None) -> Path:
    """Draw train loss (per log interval) and dev loss / CER (per epoch) to ``EXP/loss.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log_path = Path(exp_dir) / "train_log.jsonl"
    if not log_path.exists():
        raise UserError(f"{log_path} does not exist (has training run in {exp_dir}?)")
    recs = read_train_log(log_path)
    train = [r for r in recs if r.get("kind") == "train" and "loss" in r]
    epochs = [r for r in recs if r.get("kind") == "epoch" and r.get("dev_loss") is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    for part in ("loss_ctc", "loss_att", "loss_aid"):  # logged parts (older logs have none)
        rows = [r for r in train if part in r]
        if rows:
            ax1.plot([r["step"] for r in rows], [r[part] for r in rows], "--", label=f"train {part[5:]}")
    ax1.plot([r["step"] for r in epochs], [r["dev_loss"] for r in epochs], "o-", label="dev loss")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.legend()
    cer = [r for r in epochs if r.get("dev_cer") is not None]
    ax2.plot([r["step"] for r in cer], [r["dev_cer"] for r in cer], "o-", label="dev CER %")
    aid = [r for r in epochs if r.get("dev_aid_acc") is not None]
    if aid:
        acc = [100 * r["dev_aid_acc"] for r in aid]
        ax2.plot([r["step"] for r in aid], acc, "s-", label="dev AID acc %")
    train_aid = [r for r in train if "aid_acc" in r]
    if train_aid:
        ax2.plot([r["step"] for r in train_aid], [100 * r["aid_acc"] for r in train_aid], ":",
                 label="train AID acc %")
    ax2.set_xlabel("step")
    ax2.legend()
    fig.tight_layout()
    out = Path(out_png) if out_png else Path(exp_dir) / "loss.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


if __name__ == "__main__":  # pragma: no cover - thin wrapper
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m qifusion.train.plot EXP [OUT.png]")
    print(plot_loss_curves(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else None))
