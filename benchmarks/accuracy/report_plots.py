"""PNG plots of the accuracy report (matplotlib ``Figure`` with the Agg canvas, no pyplot state).

Every writer renders to bytes and replaces the target atomically (temp file + ``os.replace`` via
:func:`qifusion.fileio.atomic_write_bytes`). Output depends only on the data (no timestamps), so a rerun
on the same results gives the same bytes with the same matplotlib.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qifusion.fileio import atomic_write_bytes

DPI = 90


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())


def linestyle(label: str) -> str:
    """Dashed for runs without accent modules (baselines, oracle), solid otherwise."""
    return "--" if ("baseline" in label or "oracle" in label) else "-"


@dataclass
class Panel:
    """One axes of line plots: ``series`` label -> (xs, ys); ``xticks``: names for x = 0, 1, ..."""

    title: str
    xlabel: str
    ylabel: str
    series: dict[str, tuple[Sequence[float], Sequence[float]]] = field(default_factory=dict)
    xlog: bool = False
    xticks: Sequence[str] | None = None
    marker: str = "o"


def plot_panels(path: Path, panels: Sequence[Panel], *, width: float = 5.0, height: float = 3.4) -> None:
    """Side-by-side line plots, one per panel."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * len(panels), height))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, pn in zip(axes, panels):
        for label, (xs, ys) in pn.series.items():
            ax.plot(list(xs), list(ys), marker=pn.marker or None, markersize=3, linewidth=1.2, label=label,
                    linestyle=linestyle(label))
        if pn.xlog:
            from matplotlib.ticker import NullLocator

            ax.set_xscale("log")
            ticks = sorted({float(x) for xs, _ in pn.series.values() for x in xs})
            ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
        if pn.xticks is not None:
            ax.set_xticks(range(len(pn.xticks)), list(pn.xticks))
        ax.set_title(pn.title, fontsize=10)
        ax.set_xlabel(pn.xlabel)
        ax.set_ylabel(pn.ylabel)
        ax.grid(alpha=0.3)
        if pn.series:
            ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def plot_grouped_bars(path: Path, groups: Sequence[str], series: dict[str, Sequence[float]], *,
                      xlabel: str, ylabel: str, title: str) -> None:
    """Grouped bar chart: one group per entry of ``groups``, one bar per series in each group."""
    from matplotlib.figure import Figure

    n = max(1, len(series))
    fig = Figure(figsize=(min(11.0, max(4.0, 0.25 * n * len(groups) + 2)), 3.6))
    ax = fig.subplots()
    width = 0.8 / n
    for k, (label, values) in enumerate(series.items()):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
        ax.bar(xs, list(values), width=width, label=label)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def plot_confusion(path: Path, labels: Sequence[str], matrix: Sequence[Sequence[int]], *, title: str) -> None:
    """Row-normalised confusion matrix (reference rows, predicted columns) with counts in the cells."""
    from qifusion.eval.plots import confusion_figure

    _save(confusion_figure(list(labels), [list(r) for r in matrix], title=title, fontsize=7), path)
