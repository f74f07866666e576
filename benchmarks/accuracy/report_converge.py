"""Report section on convergence at the study's step budget, and where each run trained (CPU or GPU)."""
from __future__ import annotations

import math
from typing import Any

from benchmarks.accuracy.report_doc import DASH, RESC, SYSTEMS, Doc, Study, f2, mode_key, red
from benchmarks.accuracy.report_main import NOT_CONVERGED_CER, converged
from benchmarks.accuracy.report_stats import compare, run_cer, seed_stats


def trained_on(run: dict[str, Any]) -> str:
    """``cpu`` or the GPU's name (result JSONs from before the field existed trained on the CPU)."""
    return str(run.get("trained_on") or "cpu")


def where_label(run: dict[str, Any]) -> str:
    return "CPU" if trained_on(run) == "cpu" else "GPU"


def converged_label(run: dict[str, Any]) -> str:
    c = converged(run)
    return DASH if c is None else ("yes" if c else "**no**")


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided Fisher exact test p-value that ``k1`` of ``n1`` and ``k2`` of ``n2`` come from one rate:
    the probability, with all margins fixed (hypergeometric), of a table no more likely than the observed."""
    total, hits = n1 + n2, k1 + k2
    denom = math.comb(total, n1)

    def prob(k: int) -> float:
        return math.comb(hits, k) * math.comb(total - hits, n1 - k) / denom

    observed = prob(k1)
    lo, hi = max(0, hits - n2), min(n1, hits)
    return min(1.0, sum(prob(k) for k in range(lo, hi + 1) if prob(k) <= observed * (1 + 1e-9)))


def section_convergence(doc: Doc, study: Study) -> None:
    doc.h(2, "Convergence at this budget")
    runs = {s: study.system(s) for s in SYSTEMS}
    if not any(runs.values()):
        return
    doc.p("A run counts as converged when its dev CER (rescoring, full context) is under",
          f"{NOT_CONVERGED_CER:.0f}%. A run that is not has stayed on the early loss plateau: its final",
          "training loss (the mean of the last 5 logged values, per-seed table below) is near the level",
          "of the first few hundred steps, where a converged run's has dropped. At this budget a share of",
          "the seeds of either system does not leave the plateau before the last step, so the seed-mean",
          "CERs of the main comparison mix two things: how often a system converges, and how good it is",
          "when it does. This section separates them.")
    rows = []
    for s in SYSTEMS:
        rs = runs[s]
        ok = [r for r in rs if converged(r)]
        cers = seed_stats([run_cer(r, "test", mode_key(RESC, "full")) for r in ok])
        failed = ", ".join(r["run"] for r in rs if converged(r) is False) or DASH
        rows.append([s, f"{len(ok)}/{len(rs)}", failed,
                     DASH if cers is None else f"{f2(cers.mean)} ± {f2(cers.std)}"])
    doc.table(["system", "converged", "not converged", "test CER resc. full, converged runs (mean ± std)"],
              rows)
    (b_all, q_all) = (runs["baseline"], runs["qifusion"])
    kb, kq = (sum(1 for r in x if converged(r)) for x in (b_all, q_all))
    if b_all and q_all:
        p = fisher_exact(kq, len(q_all), kb, len(b_all))
        doc.p(f"Converged share: Qifusion {kq}/{len(q_all)}, baseline {kb}/{len(b_all)}; two-sided",
              f"Fisher exact test p = {p:.2f} (a difference in how often the systems converge is "
              + ("not shown at this number of seeds)." if p >= 0.05 else "significant at 5%)."))
    hardware_split(doc, study)
    b_ok, q_ok = ([r for r in x if converged(r)] for x in (b_all, q_all))
    parts = []
    for c in ("full", "16"):
        r = compare(b_ok, q_ok, "test", mode_key(RESC, c))
        if r is not None:
            parts.append(f"rescoring {c}: {f2(r.cer_b)} -> {f2(r.cer_q)}, {red(r)}")
    if parts:
        doc.p(f"Converged runs only ({len(b_ok)} baseline, {len(q_ok)} Qifusion; not paired by seed),",
              "relative CER reduction [95% bootstrap CI over test utterances]:", "; ".join(parts) + ".")
    doc.h(3, "Per seed")
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for s in SYSTEMS:
        for r in runs[s]:
            by_seed.setdefault(r["seed"], {})[s] = r
    rows = []
    for seed in sorted(by_seed):
        row = [str(seed)]
        for s in SYSTEMS:
            r = by_seed[seed].get(s)
            row += [DASH] * 4 if r is None else [
                f2(run_cer(r, "dev", mode_key(RESC, "full"))), f2(run_cer(r, "test", mode_key(RESC, "full"))),
                f"{r['train']['final_loss']:.1f}", where_label(r)]
        rows.append(row)
    heads = ("dev CER", "test CER", "final loss", "trained on")
    doc.table(["seed", *(f"{s} {h}" for s in SYSTEMS for h in heads)], rows)


def _share_by_hardware(runs: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """CPU/GPU -> (converged, runs with a dev decode)."""
    out: dict[str, tuple[int, int]] = {}
    for r in runs:
        c = converged(r)
        if c is not None:
            k, n = out.get(where_label(r), (0, 0))
            out[where_label(r)] = (k + int(c), n + 1)
    return out


def hardware_split(doc: Doc, study: Study) -> None:
    """Converged share by where runs trained, for the main runs and for every run."""
    parts = []
    for label, runs in (("main runs", [*study.system("baseline"), *study.system("qifusion")]),
                        ("every run of the study", list(study.runs.values()))):
        split = _share_by_hardware(runs)
        if len(split) < 2:
            continue
        (kc, nc), (kg, ng) = split["CPU"], split["GPU"]
        parts.append(f"{label}: CPU {kc}/{nc}, GPU {kg}/{ng} (Fisher p = {fisher_exact(kc, nc, kg, ng):.2f})")
    if parts:
        doc.p("Converged share by where the runs trained:", "; ".join(parts) + ".",
              "The CPU and GPU sets hold different seeds and, over the whole study, different runs (most",
              "ablations and sweep points trained on the GPU), so this cannot separate the hardware's",
              "random streams from the runs' designs; it is given so that an uneven split is visible.")


def hardware_note(study: Study) -> str:
    """One bullet for the report's header: which runs trained on a lent GPU."""
    gpu = [r for r in study.runs.values() if trained_on(r) != "cpu"]
    if not gpu:
        return "Every run trained on this machine's CPU (one thread per run)."
    names = sorted({trained_on(r) for r in gpu})
    return (f"Where runs trained: {len(study.runs) - len(gpu)} on this machine's CPU (one thread per run), "
            f"{len(gpu)} on a lent {' / '.join(names)} GPU (`benchmarks/accuracy/gpu_train.sh`: "
            f"{', '.join(sorted(r['run'] for r in gpu))}). Same corpus (its lists' md5 sums were compared), "
            "steps, batches and model initialisation; dropout draws come from the GPU's random generator "
            "(and so the chunk-size draws, which share the CPU generator with dropout in a CPU run, differ "
            "too): a GPU run of seed k is another draw, not a replica of a CPU run of seed k. "
            "A GPU run's averaged model came back stored as float16 (its step checkpoints stayed there).")
