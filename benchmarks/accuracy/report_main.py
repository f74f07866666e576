"""Report sections on the main comparison: targets, baseline vs Qifusion, streaming gap, held-back set."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.accuracy.report_doc import (
    CHUNKS,
    DASH,
    GREEDY,
    RESC,
    SYSTEMS,
    Doc,
    Study,
    expected_seeds,
    f2,
    mode_key,
    mode_label,
    ms,
    pct,
    red,
)
from benchmarks.accuracy.report_plots import Panel, plot_panels
from benchmarks.accuracy.report_stats import (
    BOOTSTRAP_B,
    BOOTSTRAP_SEED,
    MAJORITY_ACCENT,
    Reduction,
    aid_accuracy,
    compare,
    rel_change,
    run_cer,
    seed_stats,
)
from benchmarks.accuracy.spec import SHIP_DEV_MODES

WHICH_LABEL = {"all": "all accents", "minority": f"minority accents (all but {MAJORITY_ACCENT})"}
MODE_ORDER = [(m, c) for m in (RESC, GREEDY) for c in CHUNKS]


@dataclass(frozen=True)
class Target:
    """One row of the targets table."""

    target: str
    measured: str
    met: str  # yes | no | pending, maybe "(provisional)"
    note: str


def seed_note(study: Study) -> str:
    parts = [f"{s} {len(study.system(s))}/{expected_seeds(s)} seeds" for s in SYSTEMS]
    return ", ".join(parts)


def _complete(study: Study) -> bool:
    return all(len(study.system(s)) >= expected_seeds(s) for s in SYSTEMS)


def _verdict(ok: bool, *, complete: bool) -> str:
    return ("yes" if ok else "no") + ("" if complete else " (provisional)")


def mean_cer(runs: list[dict[str, Any]], set_name: str, key: str, which: str = "all") -> float | None:
    s = seed_stats([run_cer(r, set_name, key, which) for r in runs])
    return None if s is None else s.mean


def mean_aid(runs: list[dict[str, Any]], set_name: str, key: str) -> float | None:
    s = seed_stats([aid_accuracy(r, set_name, key) for r in runs])
    return None if s is None else s.mean


def shipped(study: Study, system: str) -> dict[str, Any] | None:
    """The seed a shipped model comes from (benchmarks/accuracy/ship.py): lowest mean dev CER over
    ``spec.SHIP_DEV_MODES``, then seed."""
    def key(r: dict[str, Any]) -> float | None:
        cers = [run_cer(r, "dev", m) for m in SHIP_DEV_MODES]
        return None if None in cers else sum(cers) / len(cers)

    runs = [r for r in study.system(system) if key(r) is not None]
    if not runs:
        return None
    return min(runs, key=lambda r: (key(r), r["seed"]))


NOT_CONVERGED_CER = 80.0  # dev CER % (rescoring, full context) from which a run counts as not converged


def converged(run: dict[str, Any]) -> bool | None:
    """Dev CER (rescoring, full) under ``NOT_CONVERGED_CER``; ``None`` without a dev decode."""
    cer = run_cer(run, "dev", mode_key(RESC, "full"))
    return None if cer is None else cer < NOT_CONVERGED_CER


def not_converged_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs whose dev CER (rescoring, full) is >= NOT_CONVERGED_CER."""
    return [r for r in runs if converged(r) is False]


def compare_converged(base: list[dict[str, Any]], qif: list[dict[str, Any]], set_name: str, mode: str,
                      which: str = "all") -> tuple[list[int], Reduction | None]:
    """The seeds of not-converged runs and the reduction with both systems' runs of those seeds dropped
    (``None`` when every seed converged or no pair is left)."""
    bad = sorted({r["seed"] for r in not_converged_runs([*base, *qif])})
    if not bad:
        return bad, None
    kept_b, kept_q = ([r for r in runs if r["seed"] not in bad] for runs in (base, qif))
    return bad, compare(kept_b, kept_q, set_name, mode, which)


def seed_pair_reductions(base: list[dict[str, Any]], qif: list[dict[str, Any]], set_name: str, mode: str,
                         which: str = "all") -> list[float]:
    """1 - CER_q / CER_b of each seed that both systems finished (same-seed pairs, by seed)."""
    by_seed = {r["seed"]: r for r in base}
    out = []
    for q in qif:
        b = by_seed.get(q["seed"])
        if b is None:
            continue
        cb, cq = run_cer(b, set_name, mode, which), run_cer(q, set_name, mode, which)
        if cb and cq is not None:
            out.append(1.0 - cq / cb)
    return out


def per_seed_text(reductions: list[float]) -> str:
    """``+a%, +b%, +c% (median +b%)``; the median only for 3 or more seeds."""
    text = ", ".join(pct(x, sign=True) for x in reductions) or DASH
    if len(reductions) >= 3:
        text += f" (median {pct(float(np.median(reductions)), sign=True)})"
    return text


def without_text(base: list[dict[str, Any]], qif: list[dict[str, Any]], mode: str, which: str = "all") -> str:
    """``; without seed(s) 2 (not converged): +x% [lo, hi]`` or '' when every seed converged."""
    bad, r = compare_converged(base, qif, "test", mode, which)
    if r is None:
        return ""
    return f"; without seed(s) {', '.join(map(str, bad))} (not converged): {red(r)}"


def converged_only_text(base: list[dict[str, Any]], qif: list[dict[str, Any]], mode: str,
                        which: str = "all") -> str:
    """``; converged runs only (unpaired): +x% [lo, hi]`` or '' when every run converged."""
    bad = not_converged_runs([*base, *qif])
    if not bad:
        return ""
    r = compare(*([x for x in runs if x not in bad] for runs in (base, qif)), "test", mode, which)
    return "" if r is None else f"; converged runs only (unpaired): {red(r)}"


def targets(study: Study) -> list[Target]:
    """Issue 7's targets, measured from the results that exist (``pending`` where runs are missing)."""
    base, qif = study.system("baseline"), study.system("qifusion")
    complete, note = _complete(study), seed_note(study)
    rows: list[Target] = []
    for which in ("all", "minority"):
        for chunk in ("full", "16"):
            goal = (f"Relative CER reduction vs same-size baseline, {WHICH_LABEL[which]}, rescoring {chunk}: "
                    ">= 15%, 95% CI excluding 0")
            r = compare(base, qif, "test", mode_key(RESC, chunk), which)
            if r is None:
                rows.append(Target(goal, DASH, "pending", "needs baseline_s* and qifusion_s*"))
            else:
                ok = r.point >= 0.15 and r.lo > 0
                seeds = seed_pair_reductions(base, qif, "test", mode_key(RESC, chunk), which)
                rows.append(Target(goal, red(r), _verdict(ok, complete=complete),
                                   f"{note}; per seed: {per_seed_text(seeds)}"
                                   + without_text(base, qif, mode_key(RESC, chunk), which)
                                   + converged_only_text(base, qif, mode_key(RESC, chunk), which)))
    full, c16 = (mean_cer(qif, "test", mode_key(RESC, c)) for c in ("full", "16"))
    gap = rel_change(c16, full)
    goal = "Chunk-16 CER within 10% relative of full context (Qifusion, rescoring, test)"
    if gap is None:
        rows.append(Target(goal, DASH, "pending", "needs qifusion_s*"))
    else:
        bgap = rel_change(*(mean_cer(base, "test", mode_key(RESC, c)) for c in ("16", "full")))
        rows.append(Target(goal, f"{pct(gap, sign=True)} ({f2(full)} -> {f2(c16)})",
                           _verdict(gap <= 0.10, complete=complete),
                           f"{note}; baseline gap {pct(bgap, sign=True)}"))
    aid = mean_aid(qif, "test", mode_key(RESC, "full"))
    goal = "AID accuracy >= 95% on test speakers (Qifusion, full context)"
    if aid is None:
        rows.append(Target(goal, DASH, "pending", "needs qifusion_s*"))
    else:
        rows.append(Target(goal, pct(aid), _verdict(aid >= 0.95, complete=complete),
                           f"{note}; chunk 16: {pct(mean_aid(qif, 'test', mode_key(RESC, '16')))}"))
    rows += heldout_targets(study)
    return rows


def heldout_targets(study: Study) -> list[Target]:
    """Held-back set targets, on the seeds a shipped model would use (best dev CER per system)."""
    b, q = shipped(study, "baseline"), shipped(study, "qifusion")
    have = b is not None and q is not None and "heldout" in b["sets"] and "heldout" in q["sets"]
    goals = [f"Held-back set: reduction >= 10% (shipped seeds, rescoring {c})" for c in ("full", "16")]
    goals += ["Held-back set: chunk-16 gap <= 15% (shipped Qifusion, rescoring)",
              "Held-back set: AID accuracy >= 85% (shipped Qifusion, full context)"]
    if not have:
        return [Target(g, DASH, "pending", "needs main runs evaluated with data/heldout present")
                for g in goals]
    assert b is not None and q is not None
    complete = _complete(study)
    note = f"{b['run']} vs {q['run']} (lowest dev CER)"
    rows = []
    for g, c in zip(goals, ("full", "16")):
        r = compare([b], [q], "heldout", mode_key(RESC, c))
        met = "pending" if r is None else _verdict(r.point >= 0.10, complete=complete)
        rows.append(Target(g, red(r), met, note))
    full, c16 = (run_cer(q, "heldout", mode_key(RESC, c)) for c in ("full", "16"))
    gap = rel_change(c16, full)
    rows.append(Target(goals[2], DASH if gap is None else f"{pct(gap, sign=True)} ({f2(full)} -> {f2(c16)})",
                       "pending" if gap is None else _verdict(gap <= 0.15, complete=complete), note))
    aid = aid_accuracy(q, "heldout", mode_key(RESC, "full"))
    met = "pending" if aid is None else _verdict(aid >= 0.85, complete=complete)
    rows.append(Target(goals[3], pct(aid), met, note))
    return rows


def section_targets(doc: Doc, study: Study) -> None:
    doc.h(2, "Targets (issue 7)")
    doc.p("Measured on the test split unless stated; CER is pooled over utterances; a system's CER is the",
          "mean over its seeds; the interval is a paired bootstrap over test utterances (see Main",
          "comparison).",
          "*provisional*: not all planned seeds are finished yet.")
    doc.table(["target", "measured", "met?", "note"],
              [[t.target, t.measured, t.met, t.note] for t in targets(study)], left=4)


def _cer_rows(study: Study, set_name: str, which: str, modes: list[tuple[str, str]]) -> list[list[str]]:
    rows = []
    for system in SYSTEMS:
        runs = study.system(system)
        for r in runs:
            rows.append([r["run"], *(f2(run_cer(r, set_name, mode_key(m, c), which)) for m, c in modes)])
        if runs:
            rows.append([f"**{system} mean ± std**",
                         *(ms(seed_stats([run_cer(r, set_name, mode_key(m, c), which) for r in runs]))
                           for m, c in modes)])
    return rows


def section_main(doc: Doc, study: Study) -> None:
    doc.h(2, "Main comparison: baseline vs Qifusion")
    base, qif = study.system("baseline"), study.system("qifusion")
    doc.p(f"Same data, same steps, same size; {seed_note(study)}. Test speakers and sentences are unseen in",
          "training. Mean ± sample std over seeds.")
    if not base and not qif:
        doc.p("_(pending: no main run finished yet)_")
        return
    utts = (base or qif)[0]["sets"]["test"]["utts"]
    counts = Counter(utts["accent"])
    doc.p(f"Test set: {len(utts['ids'])} utterances, {sum(utts['ref_chars'])} reference characters;",
          ", ".join(f"{a} {n}" for a, n in sorted(counts.items())) + ".")
    for which in ("all", "minority"):
        doc.h(3, f"CER (%), {WHICH_LABEL[which]}")
        doc.table(["run", *(mode_label(m, c) for m, c in MODE_ORDER)],
                  _cer_rows(study, "test", which, MODE_ORDER))
    doc.h(3, "Relative CER reduction of Qifusion over the baseline")
    doc.p("Point estimate 1 - CER_q / CER_b on the seed-mean CERs; [2.5%, 97.5%] percentiles of a paired",
          f"bootstrap: {BOOTSTRAP_B} resamples of the test utterances (numpy seed {BOOTSTRAP_SEED}), each",
          "system pooled over its seeds. The interval covers the sampling of test utterances only, not",
          "training randomness; *per seed* gives the reduction of each same-seed pair (all accents), whose",
          "spread shows how much the seed moves the result.")
    rows = []
    for m, c in MODE_ORDER:
        row = [mode_label(m, c)]
        for w in ("all", "minority"):
            r = compare(base, qif, "test", mode_key(m, c), w)
            row += [DASH if r is None else f"{f2(r.cer_b)} -> {f2(r.cer_q)}", red(r)]
        row.append(per_seed_text(seed_pair_reductions(base, qif, "test", mode_key(m, c))))
        rows.append(row)
    doc.table(["mode", "CER all", "reduction all [95% CI]", "CER minority", "reduction minority [95% CI]",
               "per seed"], rows)
    failed = not_converged_runs([*base, *qif])
    if failed:
        bad, parts = sorted({r["seed"] for r in failed}), []
        for c in ("full", "16"):
            _, r = compare_converged(base, qif, "test", mode_key(RESC, c))
            if r is not None:
                parts.append(f"rescoring {c} {f2(r.cer_b)} -> {f2(r.cer_q)}, {red(r)}")
        names = ", ".join(r["run"] for r in failed)
        doc.p(f"**Not converged:** {names} (dev CER >= {NOT_CONVERGED_CER:.0f}%, rescoring full",
              "context). The means above include these runs, as the issue's targets define them; without",
              f"seed(s) {', '.join(map(str, bad))} (both systems' runs of that seed dropped):",
              ("; ".join(parts) or "no seed pair left") + ".")
    doc.h(3, "Per-accent CER (%), mean over seeds")
    rows = []
    for acc in sorted(counts):
        row = [acc, str(counts[acc])]
        for c in ("full", "16"):
            cb, cq = (mean_cer(runs, "test", mode_key(RESC, c), acc) for runs in (base, qif))
            ch = rel_change(cq, cb)
            row += [f2(cb), f2(cq), pct(None if ch is None else -ch, sign=True)]
        rows.append(row)
    doc.table(["accent", "utts", "baseline resc. full", "qifusion resc. full", "reduction",
               "baseline resc. 16", "qifusion resc. 16", "reduction"], rows)


def _stream_rows(label: str, runs: list[dict[str, Any]], mode: str) -> list[str]:
    cers = [mean_cer(runs, "test", mode_key(mode, c)) for c in CHUNKS]
    gaps = [pct(rel_change(x, cers[0]), sign=True) for x in cers[1:]]
    return [label, MODE_LABEL_LONG[mode], *map(f2, cers), *gaps]


MODE_LABEL_LONG = {RESC: "attention rescoring", GREEDY: "CTC greedy"}


def section_streaming(doc: Doc, study: Study) -> None:
    doc.h(2, "Streaming vs full context")
    doc.p("CER (%) on test at full context and chunk 16/8/4 (decoding chunk in frames after subsampling);",
          "gap = CER_chunk / CER_full - 1. Main systems: mean over seeds.")
    systems: list[tuple[str, list[dict[str, Any]]]] = [
        (f"{s} (mean of {len(study.system(s))})", study.system(s)) for s in SYSTEMS if study.system(s)]
    systems += [(r["run"], [r]) for r in study.group("ablation")]
    rows = [_stream_rows(label, runs, m) for label, runs in systems for m in (RESC, GREEDY)]
    doc.table(["system", "mode", *CHUNKS, "gap 16", "gap 8", "gap 4"], rows, left=2)
    if systems:
        series = {label.split(" ")[0]: (range(len(CHUNKS)), [mean_cer(runs, "test", mode_key(RESC, c)) or 0.0
                                                          for c in CHUNKS]) for label, runs in systems}
        panel = Panel("Test CER vs decoding chunk (attention rescoring)", "chunk", "CER (%)", series,
                      xticks=CHUNKS)
        doc.image("streaming_cer.png", "CER vs chunk size", plot_panels, [panel], width=6.0)


def section_heldout(doc: Doc, study: Study) -> None:
    doc.h(2, "Held-back set")
    doc.p("An independent set (`qifusion synth --preset heldout`): reserved speakers, speaking rates outside",
          "the training range, sentences no other corpus uses. Decoded by the main runs only.")
    base = [r for r in study.system("baseline") if "heldout" in r["sets"]]
    qif = [r for r in study.system("qifusion") if "heldout" in r["sets"]]
    if not base and not qif:
        doc.p("_(pending: no main run evaluated with data/heldout present)_")
        return
    modes = [(RESC, "full"), (RESC, "16"), (GREEDY, "full"), (GREEDY, "16")]
    rows = []
    for system, runs in zip(SYSTEMS, (base, qif)):
        for r in runs:
            rows.append([r["run"], *(f2(run_cer(r, "heldout", mode_key(m, c))) for m, c in modes),
                         pct(aid_accuracy(r, "heldout", mode_key(RESC, "full")))])
        if runs:
            rows.append([f"**{system} mean ± std**",
                         *(ms(seed_stats([run_cer(r, "heldout", mode_key(m, c)) for r in runs]))
                           for m, c in modes),
                         pct(mean_aid(runs, "heldout", mode_key(RESC, "full")))])
    doc.table(["run", *(mode_label(m, c) for m, c in modes), "AID full"], rows)
    rows = []
    for m, c in modes:
        rs: list[Reduction | None] = [compare(base, qif, "heldout", mode_key(m, c), w)
                                      for w in ("all", "minority")]
        rows.append([mode_label(m, c), red(rs[0]), red(rs[1])])
    b, q = shipped(study, "baseline"), shipped(study, "qifusion")
    doc.p("Relative reduction, all seeds pooled (bootstrap over held-back utterances):")
    doc.table(["mode", "all accents [95% CI]", "minority [95% CI]"], rows)
    bad, r_ok = compare_converged(base, qif, "heldout", mode_key(RESC, "full"))
    if r_ok is not None:
        doc.p(f"Without seed(s) {', '.join(map(str, bad))} (not converged, see Main comparison), rescoring",
              f"full: {red(r_ok)}.")
    if b is not None and q is not None and "heldout" in b["sets"] and "heldout" in q["sets"]:
        r = compare([b], [q], "heldout", mode_key(RESC, "full"))
        doc.p(f"Shipped-model style (seed with the lowest dev CER per system): {b['run']} vs {q['run']},",
              f"rescoring full: {red(r)}.")


def section_pending(doc: Doc, pending: list[tuple[str, str, str]], total: int) -> None:
    """``pending``: (name, group, command) of runs without a result JSON."""
    doc.h(2, "Runs")
    doc.p(f"{total - len(pending)} of {total} runs have results.")
    if pending:
        doc.p("Pending (run each line; both steps resume and skip finished work):")
        doc.lines += ["```sh", *(f"{cmd}  # {group}" for _, group, cmd in pending), "```", ""]
