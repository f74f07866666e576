"""Per-accent recognition report, accent-identification (AID) accuracy and confusion matrix.

:func:`build_report` returns the dict written as ``report.json`` by ``qifusion decode``::

    {"cer": %, "wer": %, "per_accent": {accent: {"cer", "wer", "num_utts", "sub", "del", "ins"}},
     "aid_accuracy": 0..1 | null, "aid_confusion": {"labels": [...], "matrix": [[...]]} | null,
     "num_utts", "rtf", "mode", "chunk_size"}

``sub``/``del``/``ins`` are character-level counts (the units of the CER). Utterances without a
reference accent are grouped under ``"unknown"`` and left out of the AID numbers; when no utterance has
a reference accent, ``aid_accuracy`` and ``aid_confusion`` are ``null``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qifusion.eval.metrics import ErrorCounts, cer_counts, wer_counts

UNKNOWN_ACCENT = "unknown"
REPORT_KEYS = (
    "cer", "wer", "per_accent", "aid_accuracy", "aid_confusion", "num_utts", "rtf", "mode", "chunk_size",
)


@dataclass
class UttResult:
    """One decoded utterance: reference/hypothesis text, reference and predicted accent."""

    utt_id: str
    ref: str
    hyp: str
    accent: str | None = None
    pred_accent: str | None = None
    accent_prob: float | None = None


def _pct(x: float) -> float:
    return round(x, 4)


def aid_confusion(results: Sequence[UttResult]) -> dict[str, Any] | None:
    """Confusion counts ``matrix[i][j]`` = utterances of reference ``labels[i]`` predicted ``labels[j]``."""
    pairs = [(r.accent, r.pred_accent) for r in results if r.accent is not None and r.pred_accent is not None]
    if not pairs:
        return None
    labels = sorted({a for a, _ in pairs} | {p for _, p in pairs})
    index = {a: i for i, a in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for a, p in pairs:
        matrix[index[a]][index[p]] += 1
    return {"labels": labels, "matrix": matrix}


def build_report(
    results: Sequence[UttResult], *, mode: str, chunk_size: int, rtf: float
) -> dict[str, Any]:
    """The ``report.json`` dict (keys :data:`REPORT_KEYS`) of decoded utterances."""
    char_tot, word_tot = ErrorCounts(), ErrorCounts()
    groups: dict[str, tuple[ErrorCounts, ErrorCounts, int]] = {}
    for r in results:
        c, w = cer_counts(r.ref, r.hyp), wer_counts(r.ref, r.hyp)
        char_tot, word_tot = char_tot + c, word_tot + w
        key = r.accent if r.accent is not None else UNKNOWN_ACCENT
        gc, gw, n = groups.get(key, (ErrorCounts(), ErrorCounts(), 0))
        groups[key] = (gc + c, gw + w, n + 1)
    per_accent = {
        acc: {"cer": _pct(c.rate), "wer": _pct(w.rate), "num_utts": n, "sub": c.sub, "del": c.dele,
              "ins": c.ins}
        for acc, (c, w, n) in sorted(groups.items())
    }
    confusion = aid_confusion(results)
    accuracy = None
    if confusion is not None:
        m = confusion["matrix"]
        accuracy = round(sum(m[i][i] for i in range(len(m))) / sum(map(sum, m)), 6)
    report = {
        "cer": _pct(char_tot.rate),
        "wer": _pct(word_tot.rate),
        "per_accent": per_accent,
        "aid_accuracy": accuracy,
        "aid_confusion": confusion,
        "num_utts": len(results),
        "rtf": round(rtf, 6),
        "mode": mode,
        "chunk_size": chunk_size,
    }
    assert tuple(report) == REPORT_KEYS
    return report


def render_markdown(report: dict[str, Any], *, extra: dict[str, Any] | None = None) -> str:
    """A human-readable ``report.md`` of a :func:`build_report` dict (``extra``: more key/values)."""
    lines = [
        "# Decoding report",
        "",
        f"- mode: `{report['mode']}`, chunk size: {report['chunk_size']}",
        f"- utterances: {report['num_utts']}",
        f"- CER: {report['cer']:.2f} %, WER: {report['wer']:.2f} %",
        f"- RTF: {report['rtf']:.4f}",
    ]
    if report["aid_accuracy"] is not None:
        lines.append(f"- accent identification accuracy: {100 * report['aid_accuracy']:.2f} %")
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {v}")
    lines += ["", "## Per accent", "", "| accent | utts | CER % | WER % | sub | del | ins |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for acc, s in report["per_accent"].items():
        lines.append(f"| {acc} | {s['num_utts']} | {s['cer']:.2f} | {s['wer']:.2f} | {s['sub']} | "
                     f"{s['del']} | {s['ins']} |")
    conf = report["aid_confusion"]
    if conf is not None:
        labels = conf["labels"]
        lines += ["", "## Accent identification confusion (rows: reference, columns: predicted)", "",
                  "| | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        for lab, row in zip(labels, conf["matrix"]):
            lines.append(f"| **{lab}** | " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines) + "\n"


def render_table(report: dict[str, Any]) -> str:
    """The per-accent CER/WER table printed by ``qifusion decode`` and ``make demo`` (plain text)."""
    lines = [f"{'accent':<18}{'utts':>6}{'CER %':>8}{'WER %':>8}"]
    for accent, row in sorted(report["per_accent"].items()):
        lines.append(f"{accent:<18}{row['num_utts']:>6}{row['cer']:>8.2f}{row['wer']:>8.2f}")
    lines.append(f"{'all':<18}{report['num_utts']:>6}{report['cer']:>8.2f}{report['wer']:>8.2f}")
    if report.get("aid_accuracy") is not None:
        lines.append(f"accent-ID accuracy: {100 * report['aid_accuracy']:.1f}%   RTF: {report['rtf']:.3f}")
    return "\n".join(lines)

