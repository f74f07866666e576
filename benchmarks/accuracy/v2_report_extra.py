"""docs/RESULTS_v2.md beyond the main pair: ablations, loss-weight sweeps, an unseen accent, fewer accents.

Each of these runs is one seed (:data:`SEED`) and is read against the main run of the same seed: a
Qifusion variant against ``new-qifusion-sSEED-accents``, a baseline variant against the baseline's.
Intervals are the paired bootstrap over test utterances (one seed each: no seed draw).
"""
from __future__ import annotations

from typing import Any

from benchmarks.accents_subsets import ORDER, SUBSETS, UNSEEN
from benchmarks.accuracy.report_doc import DASH, RESC, Doc, f2, mode_key, pct, red
from benchmarks.accuracy.report_stats import aid_accuracy, compare, run_cer
from benchmarks.accuracy.v2 import SUBSET_GROUPS, VARIANT_GROUPS

SEED = 2  # the one-seed runs' seed: the first seed of the main pair
RESC_FULL, RESC_16 = mode_key(RESC, "full"), mode_key(RESC, "16")
WHAT = {"oracle": "baseline given the true accent as an input (the most accent knowledge can give)",
        "matched": "baseline with Qifusion's parameter count (wider FFNs)",
        "nofusion": "Qifusion without the fusion (LAF + AID as an auxiliary loss only)",
        "nolaf": "Qifusion fusing the last block only (no layer-adapted fusion)",
        "ctcfuse": "Qifusion with the fused frames feeding CTC as well"}
SWEEPS = {"w_aid": {"aid03": "0.3", "aid3": "3"}, "w_ctc": {"ctc03": "0.3", "ctc07": "0.7"}}
COMMITTED = {"w_aid": "1 (committed)", "w_ctc": "0.5 (committed)"}


def name(recipe: str, system: str, corpus: str = "accents") -> str:
    return f"{recipe}-{system}-s{SEED}-{corpus}"


def pending(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The study's one-seed runs without a result yet."""
    names = [name(v, s) for v, (_, s) in VARIANT_GROUPS.items()]
    names += [name("new", s, c) for c in SUBSET_GROUPS for s in ("baseline", "qifusion")]
    return [n for n in names if n not in runs]


def _label(r: dict[str, Any]) -> str:
    return r["run"] + ("" if r["converged"] else " (failed: not converged)")


def _data(*rs: dict[str, Any] | None) -> bool:
    """Every run is there and converged: a failed run is listed, never compared (not a data point)."""
    return all(r is not None and r["converged"] for r in rs)


def section_ablations(doc: Doc, runs: dict[str, dict[str, Any]]) -> None:
    doc.h(2, "Ablations (test)")
    doc.p(f"Seed {SEED}, attention rescoring. Reduction = `1 - CER_run / CER_main` against the main run of",
          "the same system and seed (positive: the variant makes fewer errors), 95% interval over test",
          "utterances.")
    rows = []
    for v, (group, system) in VARIANT_GROUPS.items():
        r, ref = runs.get(name(v, system)), runs.get(name("new", system))
        if group == "ablation" and r is not None:
            cells = [c for key in (RESC_FULL, RESC_16) for c in
                     (f2(run_cer(r, "test", key)),
                      red(compare([ref], [r], "test", key)) if _data(ref, r) else DASH)]
            rows.append([_label(r), WHAT[v], *cells, pct(aid_accuracy(r, "test", RESC_FULL))])
    doc.table(["run", "what", "CER full", "reduction", "CER 16", "reduction", "AID"], rows, left=2)


def section_sweeps(doc: Doc, runs: dict[str, dict[str, Any]]) -> None:
    doc.h(2, "Loss-weight sensitivity (dev)")
    doc.p(f"Qifusion seed {SEED} with one loss weight changed, read on the DEV split (never test), attention",
          "rescoring; the committed value is the main run of the same seed.")
    centre = runs.get(name("new", "qifusion"))
    rows = []
    for weight, values in SWEEPS.items():
        points = [(runs.get(name(v, "qifusion")), value) for v, value in values.items()]
        for r, value in [*points, (centre, COMMITTED[weight])]:
            if r is not None:
                rows.append([weight, value, _label(r), f2(run_cer(r, "dev", RESC_FULL)),
                             f2(run_cer(r, "dev", RESC_16)), pct(aid_accuracy(r, "dev", RESC_FULL))])
    doc.table(["weight", "value", "run", "dev CER full", "dev CER 16", "dev AID"], rows, left=3)


def section_unseen(doc: Doc, runs: dict[str, dict[str, Any]]) -> None:
    doc.h(2, "An accent never heard in training (test)")
    base, qif = runs.get(name("new", "baseline", "accents8")), runs.get(name("new", "qifusion", "accents8"))
    doc.p(f"Both systems trained on every accent but `{UNSEEN}` (train and dev:",
          f"`benchmarks/accents_subsets.py`), seed {SEED}, and tested on the whole test split; attention",
          "rescoring, full context. Reduction = Qifusion against the baseline, 95% interval over test",
          "utterances.")
    rows = []
    for which, label in ((UNSEEN, f"{UNSEEN} (unseen)"), (f"seen:{UNSEEN}", "the 8 seen accents")):
        rows.append([label, *(f2(run_cer(r, "test", RESC_FULL, which)) if r else DASH for r in (base, qif)),
                     red(compare([base], [qif], "test", RESC_FULL, which)) if _data(base, qif) else DASH])
    doc.table(["test accents", "baseline", "Qifusion", "reduction"], rows)
    if qif:
        seen = aid_accuracy(qif, "test", RESC_FULL, f"seen:{UNSEEN}")
        doc.p(f"Qifusion's accent ID on the seen accents: {pct(seen)}. It labels the `{UNSEEN}` test",
              f"utterances (an accent it has no class for) as: {_labelled_as(qif, UNSEEN)}.")


def _labelled_as(r: dict[str, Any], accent: str) -> str:
    """How a run's accent ID labels the test utterances of ``accent``: ``a 60%, b 40%``."""
    s = r["sets"]["test"]
    pred = s["modes"][RESC_FULL]["pred_accent"]
    got = [p for a, p in zip(s["utts"]["accent"], pred) if a == accent and p is not None]
    counts = sorted({p: got.count(p) for p in got}.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{p} {pct(c / len(got))}" for p, c in counts) or DASH


def section_scaling(doc: Doc, runs: dict[str, dict[str, Any]]) -> None:
    doc.h(2, "Number of accents in training (test)")
    doc.p(f"Seed {SEED}; trained on the first 4, 6 or all {len(ORDER)} accents of `ORDER` in",
          "`benchmarks/accents_subsets.py`; test CER on the accents each model trained on, attention",
          "rescoring, full context. Reduction = Qifusion against the baseline, 95% interval over test",
          "utterances.")
    rows = []
    fewer = sorted((c for c in SUBSETS if SUBSET_GROUPS[c] == "scaling"), key=lambda c: len(SUBSETS[c]))
    for corpus, accents in [*((c, SUBSETS[c]) for c in fewer), ("accents", ORDER)]:
        which = "in:" + ",".join(accents)
        base, qif = runs.get(name("new", "baseline", corpus)), runs.get(name("new", "qifusion", corpus))
        rows.append([str(len(accents)), ", ".join(accents),
                     *(f2(run_cer(r, "test", RESC_FULL, which)) + ("" if r["converged"] else " (failed)")
                       if r else DASH for r in (base, qif)),
                     red(compare([base], [qif], "test", RESC_FULL, which)) if _data(base, qif) else DASH])
    doc.table(["accents", "trained on", "baseline", "Qifusion", "reduction"], rows, left=2)
