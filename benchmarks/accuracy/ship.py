"""Ship the study's models: ``python -m benchmarks.accuracy.ship``.

For each system (baseline, qifusion) the evaluated main run with the lowest **dev** CER (attention
rescoring, mean of full context and chunk 16; never test) becomes ``models/accents-en-<system>``: its
last step checkpoints averaged and stored as float16, with a model card whose numbers are read from the
run's decode reports (test split and held-back set).
"""
from __future__ import annotations

import json

from benchmarks.accuracy.eval_run import average
from benchmarks.accuracy.spec import BY_NAME, CORPUS, EXP, RESULTS, ROOT, RUNS, SHIP_DEV_MODES, trained_on
from qifusion.eval.model_card import build_card, report_rows
from qifusion.fileio import atomic_write_text


def dev_cer(result: dict) -> float:
    modes = result["sets"]["dev"]["modes"]
    return sum(modes[k]["cer"] for k in SHIP_DEV_MODES) / len(SHIP_DEV_MODES)


def pick(system: str) -> tuple[str, dict[str, float]]:
    """Best evaluated main run of ``system`` by dev CER; returns (name, {run: dev CER})."""
    scores = {}
    for r in RUNS:
        if r.group == "main" and r.name.startswith(f"{system}_s") and (RESULTS / f"{r.name}.json").exists():
            scores[r.name] = dev_cer(json.loads((RESULTS / f"{r.name}.json").read_text()))
    if not scores:
        raise SystemExit(f"no evaluated {system} run yet: run python -m benchmarks.accuracy.run_study first")
    return min(scores, key=scores.__getitem__), scores


def where(name: str) -> str:
    """How the run trained: one CPU thread here, or a lent GPU (``gpu_train.sh``)."""
    dev = trained_on(EXP / name)
    return "one CPU thread" if dev == "cpu" else f"one {dev} GPU (`benchmarks/accuracy/gpu_train.sh`)"


def training_note(name: str, scores: dict[str, float]) -> str:
    run = BY_NAME[name]
    sets = " ".join(f"`--set {o}`" for o in run.all_overrides())
    picked = ", ".join(f"{n} {v:.2f}%" for n, v in sorted(scores.items()))
    hours = json.loads((ROOT / CORPUS / "synth_summary.json").read_text())["hours"]["train"]
    return (f"`qifusion train --config {run.config} --data {CORPUS}` with {sets}, on `qifusion synth "
            f"--preset benchmark --seed 0` (train {hours:.2f} h; dev/test speakers and sentences held out), "
            f"{where(name)}; run `{name}` of the accuracy study (`benchmarks/accuracy/`), chosen by dev CER "
            f"(rescoring, mean of full context and chunk 16) among: {picked}. Full results: docs/RESULTS.md.")


def main() -> None:
    for system in ("qifusion", "baseline"):
        name, scores = pick(system)
        out = ROOT / "models" / f"accents-en-{system}"
        average(BY_NAME[name], out=out, fp16=True)
        dec = EXP / name / "decode"
        decodes = [dec / "test" / "attention_rescoring_full", dec / "test" / "attention_rescoring_16"]
        text = build_card(out, decodes, title=f"accents-en-{system}", training=training_note(name, scores))
        held = dec / "heldout" / "attention_rescoring_16"
        if (held / "report.json").exists():
            use = text.index("## Use")
            extra = ["## Held-back set", "", "Other speakers (reserved voices), other sentences and speaking "
                     "rates outside the training range (`qifusion synth --preset heldout --seed 0`).", "",
                     *report_rows(json.loads((held / "report.json").read_text()))]
            text = text[:use] + "\n".join(extra) + "\n" + text[use:]
        atomic_write_text(out / "README.md", text.replace(str(ROOT) + "/", ""))
        print(f"{system}: shipped {name} (dev CER {scores[name]:.2f}) -> {out}")


if __name__ == "__main__":
    main()
