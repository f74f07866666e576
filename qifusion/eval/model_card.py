"""Model card (``MODEL/README.md``) text from a model dir's ``card.json`` and ``qifusion decode`` reports.

Every number in the card is read from those files (``card.json``: data, steps, parameters, dev
metrics; each ``report.json``: CER/WER per accent, accent-ID accuracy, RTF), so the card never holds
hand-typed results. Used by the recipes (``recipes/accents_en/local/model_card.py``) and by
``benchmarks.accuracy.ship``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DISCLAIMER", "build_card", "report_rows"]

DISCLAIMER = (
    "Trained on **synthetic speech** (synthesiser voices of the embedded `qifusion synth` corpus). It is a "
    "demo of the toolkit (streaming, accent ID, deployment), **not a general English recogniser**: "
    "expect it to fail on real recordings."
)


def _size_mb(model: Path) -> float:
    return sum(f.stat().st_size for f in model.iterdir() if f.is_file()) / 1e6


def report_rows(report: dict[str, Any]) -> list[str]:
    chunk = "full" if report["chunk_size"] == -1 else str(report["chunk_size"])
    head = f"### {report['mode']}, chunk {chunk} ({report['num_utts']} utterances, RTF {report['rtf']:.3f})"
    aid = report.get("aid_accuracy")
    rows = [head, "", "| accent | utts | CER % | WER % |", "|---|---:|---:|---:|"]
    for accent, r in sorted(report["per_accent"].items()):
        rows.append(f"| {accent} | {r['num_utts']} | {r['cer']:.2f} | {r['wer']:.2f} |")
    rows.append(f"| **all** | {report['num_utts']} | {report['cer']:.2f} | {report['wer']:.2f} |")
    if aid is not None:
        rows += ["", f"Accent-ID accuracy: {100 * aid:.1f}%"]
    return [*rows, ""]


def build_card(model: Path, decodes: list[Path], *, title: str, training: str = "") -> str:
    """Markdown model card text; ``training`` describes how it was trained (markdown)."""
    card = json.loads((model / "card.json").read_text())
    lines = [f"# {title}", "", DISCLAIMER, "", "## Model", ""]
    lines.append(f"- files: {', '.join(sorted(f.name for f in model.iterdir() if f.is_file()))} "
                 f"({_size_mb(model):.1f} MB{', float16 weights' if card.get('fp16') else ''})")
    for key in ("num_params", "data", "train_utts", "train_hours", "steps", "averaged", "by"):
        if key in card:
            lines.append(f"- {key}: {card[key]}")
    lines += ["- config: `config.yaml` (encoder, accent parts, decoder, loss weights)", ""]
    if card.get("data_licences"):  # the training audio's voices and text (qifusion synth summary)
        lines += ["## Licences of the training data", "",
                  *(f"- {k}: {v}" for k, v in card["data_licences"].items()), ""]
    if training:
        lines += ["## Training", "", training, ""]
    if decodes:
        lines += ["## Test results", "", "Held-out speakers and sentences of the same synthetic corpus "
                  "(`qifusion decode`; numbers read from its `report.json`).", ""]
        for d in decodes:
            lines += report_rows(json.loads((d / "report.json").read_text()))
    lines += ["## Use", "", "```bash",
              f"qifusion transcribe --model {model} --streaming --chunk-size 16 some.wav",
              f"qifusion serve --model {model}", "```", ""]
    return "\n".join(lines)
