"""Building blocks of the generated report: the loaded study, a Markdown accumulator, number formats."""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.accuracy.report_stats import Reduction, SeedStats
from benchmarks.accuracy.spec import RUNS

RESC, GREEDY = "attention_rescoring", "ctc_greedy"
CHUNKS = ("full", "16", "8", "4")
MODE_LABEL = {RESC: "resc.", GREEDY: "greedy"}
SYSTEMS = ("baseline", "qifusion")  # the main comparison: <system>_s<seed> runs of group "main"


def mode_key(mode: str, chunk: str) -> str:
    """Result JSON key of a decoding mode at a chunk size: ``attention_rescoring@16``."""
    return f"{mode}@{chunk}"


def mode_label(mode: str, chunk: str) -> str:
    return f"{MODE_LABEL[mode]} {chunk}"


@dataclass
class Study:
    """The result JSONs that exist, by run name."""

    runs: dict[str, dict[str, Any]]
    aid_fit: dict[str, dict[str, Any]] = field(default_factory=dict)  # aid_fit.py's diagnostics, by run

    def get(self, name: str) -> dict[str, Any] | None:
        return self.runs.get(name)

    def system(self, system: str) -> list[dict[str, Any]]:
        """Finished main-group runs ``<system>_s<seed>``, by seed."""
        names = [r.name for r in RUNS if r.group == "main" and r.name.rsplit("_s", 1)[0] == system]
        return sorted((self.runs[n] for n in names if n in self.runs), key=lambda r: r["seed"])

    def group(self, group: str) -> list[dict[str, Any]]:
        """Finished runs of a spec group, in spec order."""
        return [self.runs[r.name] for r in RUNS if r.group == group and r.name in self.runs]


def expected_seeds(system: str) -> int:
    """How many seeds the spec plans for a main system."""
    return sum(1 for r in RUNS if r.group == "main" and r.name.rsplit("_s", 1)[0] == system)


@dataclass
class Doc:
    """Markdown lines plus the PNG plots they link (written only by :meth:`write_plots`)."""

    plots_dir: Path
    link_prefix: str  # plots_dir relative to the Markdown file's folder
    lines: list[str] = field(default_factory=list)
    plots: dict[str, Callable[[Path], None]] = field(default_factory=dict)

    def h(self, level: int, title: str) -> None:
        self.lines += ["#" * level + " " + title, ""]

    def p(self, *text: str) -> None:
        """A paragraph (the pieces joined by spaces)."""
        self.lines += [" ".join(text), ""]

    def bullets(self, items: Sequence[str]) -> None:
        self.lines += [f"- {x}" for x in items] + [""]

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> None:
        """A Markdown table; the first ``left`` columns left-aligned, the others right-aligned."""
        if not rows:
            self.p("_(no finished runs yet)_")
            return
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|")
        self.lines += ["| " + " | ".join(r) + " |" for r in rows]
        self.lines.append("")

    def image(self, name: str, alt: str, plot: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Link ``name`` (a PNG under plots_dir); it is written later by ``plot(path, *args, **kwargs)``
        (the arguments are bound now)."""
        self.plots[name] = functools.partial(_call_with_path, plot, args, kwargs)
        self.lines += [f"![{alt}]({self.link_prefix}/{name})", ""]

    def text(self) -> str:
        while self.lines and self.lines[-1] == "":
            self.lines.pop()
        return "\n".join(self.lines) + "\n"

    def write_plots(self) -> list[Path]:
        """Write every linked plot (each writer writes atomically); returns the paths."""
        out = []
        for name in sorted(self.plots):
            path = self.plots_dir / name
            self.plots[name](path)
            out.append(path)
        return out


def _call_with_path(plot: Callable[..., None], args: tuple[Any, ...], kwargs: dict[str, Any],
                    path: Path) -> None:
    plot(path, *args, **kwargs)


def rel_link(target: Path, md_path: Path) -> str:
    """``target`` relative to the folder of ``md_path``, with forward slashes."""
    return Path(os.path.relpath(target.resolve(), md_path.resolve().parent)).as_posix()


DASH = "—"


def f2(x: float | None) -> str:
    """A CER (percent) with 2 decimals, or a dash."""
    return DASH if x is None else f"{x:.2f}"


def pct(x: float | None, *, sign: bool = False) -> str:
    """A fraction as a percentage with 1 decimal (``sign``: always show + or -)."""
    if x is None:
        return DASH
    return f"{100 * x:+.1f}%" if sign else f"{100 * x:.1f}%"


def ms(s: SeedStats | None) -> str:
    """``mean ± std`` of a seed statistic (just the mean for one seed)."""
    if s is None:
        return DASH
    return f"{s.mean:.2f}" if s.std is None else f"{s.mean:.2f} ± {s.std:.2f}"


def red(r: Reduction | None) -> str:
    """A relative reduction with its 95% interval."""
    if r is None:
        return DASH
    return f"{pct(r.point, sign=True)} [{pct(r.lo, sign=True)}, {pct(r.hi, sign=True)}]"


def cmd_for(name: str) -> str:
    """The command that produces a run's result JSON."""
    return f"python -m benchmarks.accuracy.train_run {name} && python -m benchmarks.accuracy.eval_run {name}"
