"""Generate ``docs/RESULTS_v2.md`` (issue 21) from results v2's per-run JSONs.

    python -m benchmarks.accuracy.v2_report            # write docs/RESULTS_v2.md
    python -m benchmarks.accuracy.v2_report --check    # exit 1 if it is out of date

Every number comes from ``benchmarks/results/accuracy_v2/RUN.json`` (:mod:`benchmarks.accuracy.v2`);
the main pair is seeds :data:`MAIN_SEEDS` of both committed configs on the ``accents`` corpus. A main
run that did not converge (dev CER over 20% at the end of its hour) is a failed run: it is listed, and
every target counts as missed while one exists. No timestamps: the same inputs give the same file.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks import recipe
from benchmarks.accuracy import v2_report_extra as extra
from benchmarks.accuracy.report_doc import DASH, GREEDY, RESC, SYSTEMS, Doc, f2, pct, red
from benchmarks.accuracy.report_stats import (
    BOOTSTRAP_B,
    BOOTSTRAP_SEED,
    aid_accuracy,
    compare,
    load_results,
    run_cer,
)
from benchmarks.accuracy.v2 import RESULTS
from qifusion.errors import UserError
from qifusion.fileio import atomic_write_text

OUT_MD = recipe.ROOT / "docs" / "RESULTS_v2.md"
COMMAND = "python -m benchmarks.accuracy.v2_report"
MAIN_SEEDS = (2, 3, 4)  # seeds 0-1 of Qifusion trained before results v2 existed; their models are gone
MAJORITY = "us"  # the accents preset's majority training accent; "minority" = every other accent
WHICH = {"all": "all accents", f"seen:{MAJORITY}": f"minority accents (all but {MAJORITY})"}
LM = "lm_rescoring"
PAPER_REDUCTION = 0.221  # the paper's KeSpeech relative CER reduction (arXiv 2407.03026)
AID_FULL, AID_CHUNK = 0.95, 0.90
STREAM_GAP = 0.05  # chunk-16 CER within 5% relative of full context
SHIP_WER = 15.0  # the shipped Qifusion model's test WER with the LM, percent
SHIPPED = recipe.ROOT / "models" / "accents-en-qifusion"


def run_name(system: str, seed: int) -> str:
    return f"new-{system}-s{seed}-accents"


def main_runs(runs: dict[str, dict[str, Any]], system: str, *, failed: bool = False) -> list[dict[str, Any]]:
    """The finished main runs of a system that converged, by seed (a failed run is not a data point);
    ``failed=True``: every finished one."""
    found = [runs[run_name(system, s)] for s in MAIN_SEEDS if run_name(system, s) in runs]
    return found if failed else [r for r in found if r["converged"]]


def main_group(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every run of the main group (extra seeds included), by system and seed."""
    return sorted((r for r in runs.values() if r["group"] == "main"), key=lambda r: (r["system"], r["seed"]))


def paired_reductions(base: list[dict[str, Any]], qif: list[dict[str, Any]], key: str,
                      which: str) -> list[tuple[int, float]]:
    """(seed, 1 - CER_q / CER_b) for every seed both systems have, on the test split."""
    b = {r["seed"]: run_cer(r, "test", key, which) for r in base}
    out = []
    for r in qif:
        cq, cb = run_cer(r, "test", key, which), b.get(r["seed"])
        if cq is not None and cb:
            out.append((r["seed"], 1.0 - cq / cb))
    return out


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _median_text(pairs: list[tuple[int, float]], *, sign: bool, label: str = "") -> str:
    """``median +b% (LABELs2 +a%, s3 +b%, ...)`` of per-seed values, or a dash when there are none."""
    if not pairs:
        return DASH
    seeds = ", ".join(f"s{s} {pct(v, sign=sign)}" for s, v in pairs)
    return f"median {pct(_median([v for _, v in pairs]), sign=sign)} ({label}{seeds})"


def ship_row(model_dir: Path = SHIPPED) -> list[str]:
    """The shipped-model target: pending while ``models/accents-en-qifusion`` is not a results-v2 run."""
    card = json.loads((model_dir / "card.json").read_text()) if (model_dir / "card.json").is_file() else {}
    run = card.get("run", "")
    goal = f"shipped Qifusion model: test WER <= {SHIP_WER:.0f}% with the LM"
    if not run.startswith("new-qifusion-") or "test_lm_wer" not in card:
        return [goal, f"`models/{model_dir.name}` is not a results-v2 model yet", "pending"]
    return [goal, f"{run}: {card['test_lm_wer']:.1f}%", "yes" if card["test_lm_wer"] <= SHIP_WER else "no"]


def targets(doc: Doc, runs: dict[str, dict[str, Any]]) -> None:
    finished = [*main_runs(runs, "baseline", failed=True), *main_runs(runs, "qifusion", failed=True)]
    base, qif = main_runs(runs, "baseline"), main_runs(runs, "qifusion")  # the data: converged runs
    complete = len(finished) == 2 * len(MAIN_SEEDS)
    failed = [r["run"] for r in finished if not r["converged"]]

    def verdict(ok: bool | None) -> str:
        if failed:  # missed while a main run has not converged, whatever the converged ones measure
            return "no (a main run failed)"
        if ok is None:
            return "pending"
        return ("yes" if ok else "no") + ("" if complete else " (provisional)")

    rows = [["every main run converged (dev CER <= 20%)",
             ", ".join(f"{r['run']} {r['dev_greedy_cer']:.1f}%" for r in finished) or DASH,
             "no" if failed else ("yes" if complete else "pending")]]
    for which, label in WHICH.items():
        for chunk in ("full", "16"):
            key = f"{RESC}@{chunk}"
            per_seed = paired_reductions(base, qif, key, which)
            med = _median([v for _, v in per_seed])
            pooled = compare(base, qif, "test", key, which, over_seeds=True) if base and qif else None
            ok = None if med is None or pooled is None else (med >= PAPER_REDUCTION and pooled.lo > 0)
            rows.append([f"CER reduction >= {pct(PAPER_REDUCTION)}, {label}, resc. {chunk}",
                         _median_text(per_seed, sign=True, label="seeds: ") + f"; pooled {red(pooled)}"
                         if per_seed else DASH, verdict(ok)])
    gaps = [(r["seed"], run_cer(r, "test", f"{RESC}@16"), run_cer(r, "test", f"{RESC}@full")) for r in qif]
    rel = [(s, c16 / cf - 1.0) for s, c16, cf in gaps if c16 is not None and cf]
    med_gap = _median([v for _, v in rel])
    rows.append([f"Qifusion chunk-16 CER within {pct(STREAM_GAP)} of full (resc.)",
                 _median_text(rel, sign=True),
                 verdict(None if med_gap is None else med_gap <= STREAM_GAP)])
    for chunk, goal, where in (("full", AID_FULL, "full"), ("16", AID_CHUNK, "chunk 16")):
        accs = [(r["seed"], aid_accuracy(r, "test", f"{RESC}@{chunk}")) for r in qif]
        accs = [(s, a) for s, a in accs if a is not None]
        med = _median([a for _, a in accs])
        rows.append([f"AID >= {pct(goal)} on unseen test speakers, {where}",
                     _median_text(accs, sign=False),
                     verdict(None if med is None else med >= goal)])
    ship = ship_row()
    rows.append([*ship[:2], verdict(None) if failed or ship[2] == "pending" else ship[2]])
    doc.h(2, "Targets")
    n = len(MAIN_SEEDS)
    done = {system: sum(r["system"] == system for r in finished) for system in SYSTEMS}
    doc.p(f"Main pair: seeds {', '.join(map(str, MAIN_SEEDS))} of each system; finished: baseline "
          f"{done['baseline']}/{n}, Qifusion {done['qifusion']}/{n}; converged: baseline {len(base)}, "
          f"Qifusion {len(qif)}. \"Provisional\": fewer seeds than planned. The numbers after the first",
          "row are of converged runs only. Reductions are `1 - CER_qifusion / CER_baseline` on the test",
          "split: the median of the per-seed pairs (same seed), and the pooled mean over seeds with a 95%",
          "interval from a two-level bootstrap over test utterances and seeds",
          f"(B={BOOTSTRAP_B}, numpy seed {BOOTSTRAP_SEED}).")
    doc.table(["target", "measured", "met"], rows, left=3)
    if failed:
        doc.p("**Failed runs** (not converged; not data points):", ", ".join(failed) + ".")
    pending = [run_name(s, k) for s in SYSTEMS for k in MAIN_SEEDS if run_name(s, k) not in runs]
    others = extra.pending(runs)
    if pending or others:
        doc.p("Pending runs, each `python -m benchmarks.recipe run NAME --jobs 1 --threads 2 && "
              "python -m benchmarks.accuracy.v2 eval NAME`:",
              f"main: {', '.join(f'`{n}`' for n in pending) or DASH};",
              f"one seed: {', '.join(f'`{n}`' for n in others) or DASH}.")


def superseded(doc: Doc, results_dir: Path) -> None:
    """Main runs of an earlier recipe (``RESULTS/superseded/*.json``): kept as records, never data points;
    their test numbers in a table of their own, as the runs table has them."""
    rows = [json.loads(p.read_text()) for p in sorted((results_dir / "superseded").glob("*.json"))]
    if rows:
        runs = [f"`{r['run']}` {'converged' if r['converged'] else 'failed'} (dev CER "
                f"{r['dev_greedy_cer']:.1f}%, {r['final_step']} steps): {r['superseded']}" for r in rows]
        doc.p("**Superseded main runs** (an earlier recipe; records, not data points):",
              "; ".join(runs) + ".")
        doc.p("Their test numbers (columns as in \"Runs\" below):")
        doc.table(RUN_COLUMNS, [run_row(r) for r in sorted(rows, key=lambda r: (r["system"], r["seed"]))])


RUN_COLUMNS = ["run", "steps", "dev CER", "greedy", "resc.", "resc. 16", "LM", "LM 16", "LM WER", "AID",
               "AID 16"]


def run_row(r: dict[str, Any], tag: str = "") -> list[str]:
    """One row of :data:`RUN_COLUMNS`: a run's test CERs, LM WER and AID (full context and chunk 16)."""
    c = [f2(run_cer(r, "test", k)) for k in (f"{GREEDY}@full", f"{RESC}@full", f"{RESC}@16",
                                            f"{LM}@full", f"{LM}@16")]
    lm = r["sets"]["test"]["modes"].get(f"{LM}@full", {})
    aid = [aid_accuracy(r, "test", f"{RESC}@{c}") for c in ("full", "16")]
    return [r["run"] + tag, str(r.get("final_step") or r["train"]["steps"]),
            f"{r['dev_greedy_cer']:.1f}" + ("" if r["converged"] else " (failed)"), *c,
            f2(lm.get("wer")), *(DASH if a is None else pct(a) for a in aid)]


def per_run(doc: Doc, runs: dict[str, dict[str, Any]]) -> None:
    doc.h(2, "Runs")
    doc.p("Test split (speakers and source voices unseen in training). CER %; `LM` = attention rescoring",
          "of the CTC prefix beam with the run's word 4-gram LM (`lm_rescoring`); AID = utterance accent-ID",
          "accuracy of the same decode.")
    rows = [run_row(r, "" if r["seed"] in MAIN_SEEDS else " (extra seed)") for r in main_group(runs)]
    doc.table(RUN_COLUMNS, rows)


def per_accent(doc: Doc, runs: dict[str, dict[str, Any]]) -> None:
    base, qif = main_runs(runs, "baseline"), main_runs(runs, "qifusion")
    if not base or not qif:
        return
    doc.h(2, "Per accent")
    doc.p("Test CER %, attention rescoring, full context; mean over the converged main seeds of each system.")
    accents = sorted(set(base[0]["sets"]["test"]["utts"]["accent"]))
    rows = []
    for acc in [*accents, "all"]:
        key = f"{RESC}@full"
        cb = statistics.mean(run_cer(r, "test", key, acc) or 0.0 for r in base)
        cq = statistics.mean(run_cer(r, "test", key, acc) or 0.0 for r in qif)
        rows.append([acc + (" (majority)" if acc == MAJORITY else ""), f2(cb), f2(cq),
                     pct(1.0 - cq / cb, sign=True) if cb else DASH])
    doc.table(["accent", "baseline", "Qifusion", "reduction"], rows)


def layers(doc: Doc, runs: dict[str, dict[str, Any]]) -> None:
    doc.h(2, "Which blocks carry accent")
    doc.p("Test-speaker accuracy of a linear probe on each encoder block's mean-pooled output, fitted on",
          "dev speakers (`benchmarks/accuracy/probe.py`); Qifusion's LAF weights over the blocks it fuses.")
    rows = []
    for r in sorted(runs.values(), key=lambda r: (r["system"], r["seed"])):
        probe = r.get("block_probe")
        if probe:
            rows.append([r["run"], *(pct(a) for a in probe["acc"])])
    nblocks = max((len(r["block_probe"]["acc"]) for r in runs.values() if r.get("block_probe")), default=0)
    doc.table(["run", *(f"b{b}" for b in range(1, nblocks + 1))], rows)
    laf = [[r["run"], ", ".join(f"b{b} {w:.2f}" for b, w in zip(r["laf"]["layers"], r["laf"]["weights"]))]
           for r in sorted(runs.values(), key=lambda r: r["seed"]) if r.get("laf")]
    if laf:
        doc.table(["run", "LAF weights"], laf)


def build(results_dir: Path = RESULTS) -> Doc:
    runs = load_results(results_dir)
    doc = Doc(plots_dir=OUT_MD.parent, link_prefix=".")
    doc.lines += ["# Results v2: Qifusion-Net against the same-size baseline on audible accents", "",
                  f"<!-- Generated by `{COMMAND}` from benchmarks/results/accuracy_v2/*.json; do not edit "
                  f"by hand. Check: `{COMMAND} --check`. -->", ""]
    doc.p("Issue 21, in progress. Each run is `python -m benchmarks.recipe run new-SYSTEM-sSEED-accents",
          "--jobs 1 --threads 2` (the committed `conf/{baseline,qifusion}_small.yaml`, at most",
          f"{recipe.MINUTES:.0f} minutes of training on this 2-core CPU, final model = the average of its",
          "last checkpoints; docs/recipe.md), then `python -m benchmarks.accuracy.v2 eval RUN` (test and dev",
          "decodes, in the session the run trained in). Corpus: `qifusion synth --preset accents`",
          "(docs/synth.md), non-free MBROLA voices included. The first study (fixed 700 steps, espeak",
          "accents) is docs/RESULTS.md.")
    targets(doc, runs)
    superseded(doc, results_dir)
    per_run(doc, runs)
    per_accent(doc, runs)
    layers(doc, runs)
    for section in (extra.section_ablations, extra.section_sweeps, extra.section_unseen,
                    extra.section_scaling):
        section(doc, runs)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if the report is not up to date")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the per-run JSONs")
    ap.add_argument("--out", type=Path, default=OUT_MD, help="the Markdown file to write")
    args = ap.parse_args()
    try:
        text = build(args.results).text()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} is out of date: run {COMMAND}", file=sys.stderr)
            sys.exit(1)
        print(f"{args.out} is up to date")
        return
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
