"""Markdown comparison of decode results (the `report` stage of the recipes).

Each system is ``NAME=DIR`` where ``DIR`` holds one sub-dir per decode condition with the
``report.json`` that ``qifusion decode`` writes (``cer``, ``wer``, ``per_accent``, ``aid_accuracy``,
``mode``, ``chunk_size``). Conditions are matched across systems by (mode, chunk size). With
``--reference``, every other system gets a relative CER reduction column: (ref - sys) / ref x 100.

    python recipes/_report.py --system baseline=exp/baseline/decode_avg_5 \\
        --system qifusion=exp/qifusion/decode_avg_5 --reference baseline --out exp/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from qifusion.fileio import atomic_write_text

Report = dict[str, Any]
Condition = tuple[str, int]  # (mode, chunk_size)


def load_reports(decode_root: Path) -> dict[Condition, Report]:
    """All ``decode_root/*/report.json`` keyed by (mode, chunk_size); missing root or none -> error."""
    paths = sorted(decode_root.glob("*/report.json"))
    if not paths:
        raise SystemExit(f"error: no */report.json under {decode_root} (run the decode stage first)")
    out: dict[Condition, Report] = {}
    for p in paths:
        rep = json.loads(p.read_text(encoding="utf-8"))
        try:
            out[(str(rep["mode"]), int(rep["chunk_size"]))] = rep
        except KeyError as e:
            raise SystemExit(f"error: {p} has no key {e} (not a qifusion decode report?)") from e
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _rel(ref: float | None, sys_: float | None) -> str:
    if ref is None or sys_ is None or ref == 0:
        return "-"
    return f"{100.0 * (ref - sys_) / ref:+.1f}%"


def _chunk(c: int) -> str:
    return "full" if c < 0 else str(c)


def _sort_key(cond: Condition) -> tuple[str, int]:
    mode, chunk = cond
    return (mode, -(10**9) if chunk < 0 else -chunk)  # per mode: full context first, then large to small


def build_markdown(
    systems: dict[str, dict[Condition, Report]], *, reference: str | None, title: str, label: str = "accent"
) -> str:
    """Overall and per-accent tables (CER %, relative reduction vs ``reference``, AID accuracy).

    ``label`` names the accent column (``subdialect`` for KeSpeech, ``region`` for RAMC).
    """
    names = list(systems)
    others = [n for n in names if n != reference] if reference else []
    conds = sorted({c for reps in systems.values() for c in reps}, key=_sort_key)
    lines = [f"# {title}", ""]
    some = next(iter(next(iter(systems.values())).values()))
    lines += [f"Test utterances: {some.get('num_utts', '?')}. CER/WER in %, AID accuracy in %; "
              "`-` = not available.", ""]
    head = ["mode", "chunk"] + [f"{n} CER" for n in names] + [f"{n} vs {reference}" for n in others]
    head += [f"{n} WER" for n in names] + [f"{n} AID" for n in names]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for cond in conds:
        reps = [systems[n].get(cond) for n in names]
        cer = {n: (r["cer"] if r else None) for n, r in zip(names, reps)}
        row = [cond[0], _chunk(cond[1])] + [_pct(cer[n]) for n in names]
        row += [_rel(cer[reference], cer[n]) for n in others] if reference else []
        row += [_pct(r["wer"] if r else None) for r in reps]
        row += [_pct(100.0 * r["aid_accuracy"] if r and r.get("aid_accuracy") is not None else None)
                for r in reps]
        lines.append("| " + " | ".join(row) + " |")
    for cond in conds:
        accents = sorted({a for n in names for a in (systems[n].get(cond) or {}).get("per_accent", {})})
        if not accents:
            continue
        lines += ["", f"## CER per {label}: {cond[0]}, chunk {_chunk(cond[1])}", ""]
        head = [label, "utts"] + [f"{n} CER" for n in names] + [f"{n} vs {reference}" for n in others]
        lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for acc in accents:
            per = {n: (systems[n].get(cond) or {}).get("per_accent", {}).get(acc) for n in names}
            utts = next((p["num_utts"] for p in per.values() if p), 0)
            cer = {n: (p["cer"] if p else None) for n, p in per.items()}
            row = [acc, str(utts)] + [_pct(cer[n]) for n in names]
            row += [_rel(cer[reference], cer[n]) for n in others] if reference else []
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--system", action="append", required=True, metavar="NAME=DIR",
                    help="a system and its dir of decode sub-dirs (repeatable; table column order)")
    ap.add_argument("--reference", default=None, help="system the others are compared with")
    ap.add_argument("--title", default="Results")
    ap.add_argument("--label", default="accent", help="what an accent is called in the tables")
    ap.add_argument("--out", required=True, help="markdown file to write (also printed)")
    args = ap.parse_args(argv)
    systems: dict[str, dict[Condition, Report]] = {}
    for item in args.system:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            ap.error(f"--system must look like NAME=DIR, got {item!r}")
        systems[name] = load_reports(Path(path))
    if args.reference is not None and args.reference not in systems:
        ap.error(f"--reference {args.reference!r} is not one of the systems: {', '.join(systems)}")
    text = build_markdown(systems, reference=args.reference, title=args.title, label=args.label)
    atomic_write_text(Path(args.out), text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
