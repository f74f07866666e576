"""Report plots as PNG (matplotlib with the non-interactive Agg backend)."""

from __future__ import annotations

import io
import os
from typing import Any

from qifusion.fileio import atomic_write_bytes


def _figure_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def per_accent_cer_figure(report: dict[str, Any]) -> Any:
    """Bar chart (a matplotlib Figure) of the per-accent CER of a ``report.json`` dict.

    The overall CER is a dashed line labelled at its right end, outside the bars; each bar's value sits
    on a white box drawn above the line, and the y range leaves room above the tallest bar, so no label
    is hidden (there is no legend to cover them).
    """
    from matplotlib.figure import Figure

    per = report["per_accent"]
    names = list(per)
    values = [per[a]["cer"] for a in names]
    fig = Figure(figsize=(max(4.0, 0.7 * len(names) + 2.5), 3.5))
    ax = fig.subplots()
    bars = ax.bar(range(len(names)), values, color="tab:blue", zorder=2)
    ax.axhline(report["cer"], color="tab:red", linestyle="--", linewidth=1, zorder=1)
    ax.annotate(f"all {report['cer']:.1f}", xy=(1.0, report["cer"]), xycoords=("axes fraction", "data"),
                xytext=(4, 0), textcoords="offset points", va="center", fontsize=8, color="tab:red")
    for text in ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8, padding=2):
        text.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 0.5})
        text.set_zorder(3)
    ax.set_ylim(0, 1.18 * max([*values, report["cer"], 1e-6]))
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("CER (%)")
    ax.set_title(f"CER per accent ({report['mode']}, chunk {report['chunk_size']})")
    return fig


def plot_per_accent_cer(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write :func:`per_accent_cer_figure` as a PNG."""
    atomic_write_bytes(path, _figure_bytes(per_accent_cer_figure(report)))


def confusion_figure(labels: list[str], matrix: list[list[int]], *, title: str, fontsize: int = 8) -> Any:
    """A matplotlib Figure of a row-normalised confusion matrix (reference rows, predicted columns) with
    the counts in the cells."""
    from matplotlib.figure import Figure

    n = len(labels)
    norm = [[c / max(sum(row), 1) for c in row] for row in matrix]
    fig = Figure(figsize=(max(3.5, 0.6 * n + 2), max(3.0, 0.6 * n + 1.5)))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=fontsize,
                    color="white" if norm[i][j] > 0.5 else "black")
    ax.set_xticks(range(n), list(labels), rotation=45, ha="right")
    ax.set_yticks(range(n), list(labels))
    ax.set_xlabel("predicted accent")
    ax.set_ylabel("reference accent")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig


def plot_aid_confusion(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Row-normalised accent-identification confusion matrix with counts in the cells."""
    conf = report["aid_confusion"]
    if conf is None:
        raise ValueError("report has no aid_confusion (no reference accents)")
    acc = report.get("aid_accuracy")
    title = "AID confusion" + (f" (accuracy {100 * acc:.1f} %)" if acc is not None else "")
    fig = confusion_figure(conf["labels"], conf["matrix"], title=title)
    atomic_write_bytes(path, _figure_bytes(fig))
